"""Kernels of the model's forward pass on CPUs: linear layers over packed weights (vnni_linear: Q4_1, Q8_0 and
bf16 records; weight_only: aten's int8/int4), a layer's per-row work and a step's whole layer stack in C
(fused_layer), attention of each row over the paged cache (row_attention), and packed weights on 2 MiB pages
(huge_pages). The C sources are in csrc/, built by c_library at set-up (`hearth kernels --build`) or on first
use; which CPU level each family runs at is decided by hearth.kernels.cpu_isa alone."""
