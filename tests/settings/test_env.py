"""The CHATCLI_* variables: one table, values checked like the config file's, errors name the variable."""

from __future__ import annotations

import pytest

from chatcli.errors import UsageError
from chatcli.settings.env import ENV_VARS, read_env
from chatcli.settings.keys import KEYS


def test_one_variable_per_key():
    assert set(ENV_VARS) == set(KEYS)
    assert ENV_VARS["model"] == "CHATCLI_MODEL" and ENV_VARS["top_p"] == "CHATCLI_TOP_P"


def test_values_are_parsed_and_empty_means_unset():
    env = {"CHATCLI_TEMPERATURE": "0.25", "CHATCLI_TOP_K": "40", "CHATCLI_ADAPTERS": "pirate:0.5  shout",
           "CHATCLI_MODEL": "m", "CHATCLI_SYSTEM": "", "CHATCLI_SEED": "3", "OTHER": "x"}
    assert read_env(env) == {"temperature": 0.25, "top_k": 40, "adapters": ["pirate:0.5", "shout"],
                             "model": "m", "seed": 3}


@pytest.mark.parametrize("var, text, words", [
    ("CHATCLI_TEMPERATURE", "hot", "CHATCLI_TEMPERATURE must be a number, not 'hot'"),
    ("CHATCLI_TOP_K", "1.5", "CHATCLI_TOP_K must be an integer"),
    ("CHATCLI_TOP_P", "0", "CHATCLI_TOP_P cannot be 0.0"),
    ("CHATCLI_DTYPE", "fp8", "CHATCLI_DTYPE must be one of float32, bfloat16, float16"),
])
def test_bad_values_name_the_variable(var, text, words):
    with pytest.raises(UsageError) as e:
        read_env({var: text})
    assert words in e.value.message and "\n" not in e.value.message
