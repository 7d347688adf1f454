"""Operations on a CUDA machine without a registry: the wheels it lacks, the GPU check."""
