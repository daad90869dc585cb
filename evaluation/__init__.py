"""dbd.evaluation: scoring blur maps. `metrics` (the literature's protocols, the error anatomy, PSNR,
and METRICS: one table of every metric's label, direction, gate tolerance and display format),
`scoring` (a runner's maps of (photo, mask) pairs, scored at the mask's resolution) and `tta`
(test-time augmentation and ensembles). Used alike by dbd-bench, its gate, the training report and
training's model selection."""
