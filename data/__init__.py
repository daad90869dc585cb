"""dbd.data: the benchmark datasets with one mask convention (1 = blur), synthetic defocus, and the
capture variation (downscalers, JPEG, sensor noise) that training augments with and robustness
scoring measures. Torch-free; above dbd.runtime (it decodes photos with runtime.imageio), below
dbd.evaluation and the stages."""
