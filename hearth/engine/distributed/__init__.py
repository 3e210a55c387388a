"""Tensor parallelism over torch.distributed: one model sharded over N ranks (gloo on CPU, nccl on CUDA).

- group.py: the process group, its collectives (a deterministic all-reduce, the logits gather, the step
  broadcast) and failure handling;
- sharding.py: which rows/columns of each weight a rank holds, read slice by slice from safetensors;
- layers.py: a rank's column/row-parallel linears and its vocab-parallel embedding;
- step.py: a step's forward inputs as one tensor, broadcast by rank 0;
- launch.py: starting the ranks (spawned by rank 0 on one host, or torchrun) and the other ranks' loop.

Rank 0 schedules and samples; the others only run the forward on what rank 0 broadcasts. Only the model
runner and the loader know about ranks.
"""
