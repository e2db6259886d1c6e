"""dnaembed-serve: embeddings on demand over the OpenAI API (Ray Serve + vLLM)."""
