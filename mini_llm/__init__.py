"""mini_llm: a GPT-style language model built from scratch, for the notebook course.

One module per idea: corpus, tokenizer (and bpe from scratch), data, attention, model, train,
checkpoint, generate, chat, export, plus plots, widgets and exercises for the notebooks.
"""

__version__ = "0.1.0"
