"""The sampling pipeline over a batch of logits [num_seqs, vocab_size]: logit bias, penalties and banned
tokens, temperature, top-k / top-p / min-p truncation, seeded draws and logprobs (sampler.Sampler runs them
in that order), with the per-batch metadata they read (metadata.SamplingMetadata). hearth.kernels.triton holds
GPU versions of some of these steps."""
