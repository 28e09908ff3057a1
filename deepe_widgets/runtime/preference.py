"""The kernel half of the preference type (KTO-Demo, ORPO-Demo, SimPO-Demo, Reward-Demo): preference
pairs from a dataset's columns, KTO's unpaired rows, and a reward model's scores.

Imports nothing at load time: each function takes the `datasets.Dataset`, tokenizer or model it works on.
"""

from __future__ import annotations


def _as_messages(value, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": str(value)}]


def is_conversational(tokenizer, first_row: dict, columns: tuple[str, ...]) -> bool:
    """Whether rows become chat messages: the data holds them, or the model has a chat template
    (text is then wrapped in it, as SFT-Demo, DPO-Demo and the inference stage do)."""
    return bool(getattr(tokenizer, "chat_template", None)) or any(
        isinstance(first_row.get(column), list) for column in columns)


def prompt_messages(prompt, system_prompt: str = "") -> list[dict]:
    """A prompt (text or messages) as chat messages, opened by `system_prompt` when given."""
    messages = _as_messages(prompt, "user")
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def preference_pairs(raw, tokenizer, prompt_column: str = "", chosen_column: str = "",
                     rejected_column: str = "", system_prompt: str = ""):
    """A dataset of `prompt` / `chosen` / `rejected` from `raw`'s columns (empty names: those three).

    Each value may be text or chat messages; text is wrapped in the model's chat template where it has
    one (the prompt opened by `system_prompt`). Without a prompt column, chosen and rejected must be
    whole conversations sharing their opening turns (TRL's implicit prompt). Refuses missing columns
    and a pair whose two responses are the same (it teaches nothing and hides a data mistake)."""
    prompt_column, chosen_column = prompt_column or "prompt", chosen_column or "chosen"
    rejected_column = rejected_column or "rejected"
    columns = raw.column_names
    missing = [c for c in (chosen_column, rejected_column) if c not in columns]
    if missing:
        raise ValueError(f"dataset has no column {missing[0]!r} (columns: {columns}); name the chosen and "
                         "rejected columns with PromptOutputColumn and PromptRejectedColumn")
    has_prompt = prompt_column in columns
    first = raw[0]
    if not has_prompt and not (isinstance(first[chosen_column], list) and isinstance(first[rejected_column], list)):
        raise ValueError(f"dataset has no prompt column {prompt_column!r}: name it with PromptInputColumn, or give "
                         "chosen and rejected as whole conversations that share their opening turns")
    same = [i for i, row in enumerate(raw) if row[chosen_column] == row[rejected_column]]
    if same:
        raise ValueError(f"{len(same)} rows have the same chosen and rejected response (first: row {same[0] + 1}); "
                         "fix or drop them")
    conversational = is_conversational(tokenizer, first, (prompt_column, chosen_column, rejected_column))

    def to_pair(row):
        if not conversational:  # plain text: the trainer scores prompt + response as written
            return {"prompt": str(row[prompt_column]), "chosen": str(row[chosen_column]),
                    "rejected": str(row[rejected_column])}
        pair = {"chosen": _as_messages(row[chosen_column], "assistant"),
                "rejected": _as_messages(row[rejected_column], "assistant")}
        if has_prompt:
            pair["prompt"] = prompt_messages(row[prompt_column], system_prompt)
        return pair

    return raw.map(to_pair, remove_columns=columns, load_from_cache_file=False)


def has_pairs(raw, rejected_column: str = "") -> bool:
    """Whether `raw` holds preference pairs (a rejected column) rather than KTO's unpaired rows."""
    return (rejected_column or "rejected") in raw.column_names


def unpaired_preferences(raw, tokenizer, prompt_column: str = "", completion_column: str = "",
                         system_prompt: str = "", seed: int = 42):
    """KTO's `prompt` / `completion` / `label` rows from unpaired data: a prompt, one answer and whether it
    is desirable (`label`: true or false), each text or chat messages as in `preference_pairs`.
    Shuffled with `seed`: KTO batches rows in order, and each batch should hold both kinds of answer."""
    prompt_column, completion_column = prompt_column or "prompt", completion_column or "completion"
    columns = raw.column_names
    missing = [c for c in (prompt_column, completion_column, "label") if c not in columns]
    if missing:
        raise ValueError(f"dataset has no column {missing[0]!r} (columns: {columns}); KTO reads prompt / "
                         "completion / label rows (name the first two with PromptInputColumn and "
                         "PromptOutputColumn), or prompt / chosen / rejected pairs")
    labels = {str(value).lower() for value in raw["label"]}
    if not labels <= {"true", "false", "1", "0"}:
        raise ValueError(f"the label column must say true or false (desirable or not), not {sorted(labels)[:3]}")
    conversational = is_conversational(tokenizer, raw[0], (prompt_column, completion_column))

    def to_row(row):
        desirable = str(row["label"]).lower() in ("true", "1")
        if not conversational:
            return {"prompt": str(row[prompt_column]), "completion": str(row[completion_column]), "label": desirable}
        return {"prompt": prompt_messages(row[prompt_column], system_prompt),
                "completion": _as_messages(row[completion_column], "assistant"), "label": desirable}

    return raw.map(to_row, remove_columns=columns, load_from_cache_file=False).shuffle(seed=seed)


def unpair(pairs, seed: int = 42):
    """KTO's rows from preference pairs (TRL's `unpair_preference_dataset`: each chosen answer desirable,
    each rejected one not), shuffled with `seed`: TRL puts every chosen row first, and KTO batches rows in
    order, so without it a short run would see no rejected answer at all."""
    from trl.data_utils import unpair_preference_dataset

    return unpair_preference_dataset(pairs).shuffle(seed=seed)


def scoring_text(tokenizer, prompt, answer, system_prompt: str = ""):
    """The token ids a reward model scores for a prompt and its answer, made as RewardTrainer made its
    training rows: the chat template over the conversation where the model has one, else the plain
    prompt + answer ended by EOS."""
    if getattr(tokenizer, "chat_template", None) or isinstance(prompt, list) or isinstance(answer, list):
        messages = prompt_messages(prompt, system_prompt) + _as_messages(answer, "assistant")
        return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    text = str(prompt) + str(answer)
    if tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return tokenizer(text)["input_ids"]


def reward_scores(model, tokenizer, prompts: list, answers: list, system_prompt: str = "") -> list[float]:
    """A reward model's score (its one output, higher: better) of each prompt with its answer."""
    import torch

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer per prompt")
    device = next(model.parameters()).device
    scores = []
    model.eval()
    with torch.no_grad():
        for prompt, answer in zip(prompts, answers):  # one at a time: no padding to get wrong
            ids = torch.tensor([scoring_text(tokenizer, prompt, answer, system_prompt)], device=device)
            scores.append(float(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0]))
    return scores
