"""Text: the caption tokenizer and the vocabulary."""
