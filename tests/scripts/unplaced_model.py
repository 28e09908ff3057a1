"""A script that picks its model class by name at run time (MODEL_CLASS in its environment): nothing
in its code says which kind of model it trains, so the platform cannot place it and passes it no
LoRA flags."""

import os

import transformers
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, transformers.TrainingArguments, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    model_class = getattr(transformers, os.environ.get("MODEL_CLASS", "AutoModel"))
    model = model_class.from_pretrained(model_args.model_name_or_path)
    peft_config = get_peft_config(model_args)
