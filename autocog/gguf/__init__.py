"""GGUF tools: conversion from transformers checkpoints (`convert`), quantization (`quantize`), perplexity,
model cards (`card`) and the offline models the tests and the demo use (`models`)."""
