"""A script that builds `model`, `tokenizer` and `trainer` at the top level and leaves the
training to whoever runs it (the platform trains and saves)."""

import argparse

from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

parser = argparse.ArgumentParser()
parser.add_argument("--model_name_or_path", required=True)
parser.add_argument("--dataset_name", required=True)
parser.add_argument("--output_dir", default="out")
parser.add_argument("--max_steps", type=int, default=100)
parser.add_argument("--per_device_train_batch_size", type=int, default=8)
parser.add_argument("--learning_rate", type=float, default=1e-4)
parser.add_argument("--logging_steps", type=int, default=50)
parser.add_argument("--lora_r", type=int, default=16)
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(args.model_name_or_path),
                       LoraConfig(r=args.lora_r, task_type="CAUSAL_LM"))
rows = load_dataset(args.dataset_name)["train"]
data = rows.map(lambda r: tokenizer(r["instruction"] + " " + r["output"], truncation=True, max_length=64),
                remove_columns=rows.column_names)
trainer = Trainer(model=model, train_dataset=data,
                  args=TrainingArguments(output_dir=args.output_dir, max_steps=args.max_steps,
                                         per_device_train_batch_size=args.per_device_train_batch_size,
                                         learning_rate=args.learning_rate, logging_steps=args.logging_steps,
                                         save_strategy="no", report_to="none"),
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
