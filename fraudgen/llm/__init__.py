"""LLM engine: row codec, locally trained tokenizer/model or any local HF causal LM, LoRA adapters,
grammar-constrained sampling with rule fallback. Public entry points: ``sample.generate_llm_table``,
``train.train_model``, ``batch.LlmShardGenerator``, ``command.llm_train_command`` / ``llm_sample_command``."""
