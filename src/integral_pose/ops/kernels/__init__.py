"""Optional fused GPU kernels (Triton). Import ``triton_soft_argmax`` from its module: importing this
package does not import Triton, so the rest of the library works without it."""
