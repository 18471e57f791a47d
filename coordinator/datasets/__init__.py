"""Content-addressed dataset files for jobs whose dataset is a user's safetensors file."""
