"""Model definitions: VQ-VAE motion tokenizer, Guo evaluator, motion LLM."""
