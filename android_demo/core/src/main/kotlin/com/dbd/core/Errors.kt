package com.dbd.core

/** Every error the core raises: one line that names the file, tensor or value at fault. */
open class DbdException(message: String) : RuntimeException(message)

/** The .tflite bytes are not a readable TFLite flatbuffer (truncated, foreign or corrupt). */
class ModelFormatException(message: String) : DbdException(message)

/** The "dbd" metadata is missing, malformed, or disagrees with the graph it describes. */
class ModelContractException(message: String) : DbdException(message)
