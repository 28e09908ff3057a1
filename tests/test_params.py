import pytest

from deepe_widgets import params
from deepe_widgets.errors import DeepeError

DEFAULTS = {"MAX_STEPS": "-1", "LEARNING_RATE": "0.0002", "PromptInputColumn": "''", "LOAD_IN_4BIT": "False",
            "BATCH_SIZE": "4", "MODEL_PATH": "''", "SYSTEM_PROMPT": "''", "EPOCHS": "1"}


def test_keys_in_any_spelling_map_to_seed_names_with_types():
    got = params.resolve({"max_steps": "5", "learning_rate": "2e-4", "prompt_input_column": "q",
                          "load_in_4bit": "yes", "SYSTEM_PROMPT": "Be brief."}, DEFAULTS)
    assert got == {"MAX_STEPS": 5, "LEARNING_RATE": 2e-4, "PromptInputColumn": "q", "LOAD_IN_4BIT": True,
                   "SYSTEM_PROMPT": "Be brief."}
    assert params.resolve({"promptinputcolumn": "x"}, DEFAULTS) == {"PromptInputColumn": "x"}


@pytest.mark.parametrize("key,value,message", [
    ("batch_size", "four", "BATCH_SIZE must be a whole number"),
    ("batch_size", "0", "BATCH_SIZE must be at least 1"),
    ("learning_rate", "fast", "LEARNING_RATE must be a number"),
    ("learning_rate", "-1", "LEARNING_RATE must be between 0 and 1"),
    ("learning_rate", "nan", "LEARNING_RATE must be a finite number"),
    ("max_steps", "0", "MAX_STEPS must be a positive number"),
    ("load_in_4bit", "maybe", "LOAD_IN_4BIT must be true or false"),
    ("epochs", "0", "EPOCHS must be above 0"),
    ("nonsense", "1", "unknown parameter 'nonsense'"),
    ("model_path", "/etc", "MODEL_PATH is set by the platform"),
])
def test_bad_values_get_one_clear_sentence(key, value, message):
    with pytest.raises(DeepeError, match=message):
        params.resolve({key: value}, DEFAULTS)


def test_assignments_need_an_equals_sign():
    assert params.parse_assignments(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(DeepeError, match="key=value"):
        params.parse_assignments(["oops"])


def test_typical_ranges_are_warnings_not_errors():
    assert params.warnings_for({"EPOCHS": 100, "LEARNING_RATE": 2e-4}) == [
        "EPOCHS=100 is outside the typical range 1–50"]
