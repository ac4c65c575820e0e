"""What is trained: soft prompts and their initialisers, and the rest of the prompt family
(Prefix-Tuning, P-Tuning, P-Tuning v2, prompt tables), registered in `family`."""

from prompt_tuning.prompts import initializers
from prompt_tuning.prompts.prompt import Prompt

__all__ = ["Prompt", "initializers"]
