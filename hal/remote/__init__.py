"""Remote devices over the TinyGPU socket protocol: records (protocol), the client backend (client)
and the serving side (server) that tools.gpu_server runs."""
