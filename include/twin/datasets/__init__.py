"""Fine-tuning datasets in the author's own voice: instruction rows (the generator writes the
question, the answer is the author's passage verbatim) and preference rows (chosen: the passage,
rejected: the base model's own answer), filtered, split, versioned and traced.
"""
