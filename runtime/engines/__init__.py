"""The engines that run exported files: one module per exported-file format (`onnx`, `tflite`,
`coreml`, `ncnn`, `executorch`), holding what running a file of that format needs — its runner (a
`dbd.runtime.runners.ExportedRunner`), its container's reader of the "dbd" metadata, and its
runtime's profiler hook (`dbd-bench --profile`) — and `shared`, what they have in common.

Converting a model to a format, checking the written file and describing it is the export side
(the `FileFormat` plug-ins in dbd.export), which uses these modules; nothing here imports dbd.export.

The format registry (dbd.runtime.formats) loads the plug-ins, and with them these modules, whenever
formats are looked up, also to read one file's metadata or to run another format: the heavy runtime
libraries (onnxruntime, ai-edge-litert, coremltools, ncnn, executorch, torch) are imported inside the
functions that use them, never at module level.
"""
