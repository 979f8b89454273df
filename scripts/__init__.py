"""Developer scripts: `python -m scripts.demo` (`make demo`), build-llama-server.sh."""
