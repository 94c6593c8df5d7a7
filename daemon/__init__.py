"""batchd: JSONL files of LLM requests in, provider Batch API jobs, results out."""

__version__ = "0.1.0"
