package com.dbd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** A tensor of the graph as the flatbuffer declares it. */
data class TensorInfo(
    val name: String,
    val shape: List<Int>,
    /** numpy's name for the element type: "float32", "int8", "uint8", ... */
    val dtype: String,
    val quantization: QuantParams?,
)

/**
 * Just enough of a TFLite flatbuffer (schema.fbs, identifier "TFL3") for the app to check a model
 * before handing it to LiteRT: the `Model.metadata` entries (and the `Model.buffers` they point
 * to), the number of subgraphs, the first subgraph's input and output tensors (shape, type,
 * quantisation) and the custom operators. Reading is bounds-checked: a truncated or foreign file
 * raises [ModelFormatException] instead of reading garbage.
 */
class TfliteModel private constructor(private val data: ByteArray) {
    private val buf: ByteBuffer = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN)
    private val model: Int = table(0)

    val subgraphCount: Int get() = vector(model, MODEL_SUBGRAPHS).second
    val inputs: List<TensorInfo> get() = ioTensors(SUBGRAPH_INPUTS)
    val outputs: List<TensorInfo> get() = ioTensors(SUBGRAPH_OUTPUTS)

    /** Names of the metadata entries ("dbd", "min_runtime_version", ...). */
    val metadataNames: List<String>
        get() {
            val (start, n) = vector(model, MODEL_METADATA)
            return (0 until n).mapNotNull { i -> string(table(start + 4 * i), METADATA_NAME) }
        }

    /** Custom op codes (a Flex / select-TF op is a custom op whose name starts with "Flex"). */
    val customOps: List<String>
        get() {
            val (start, n) = vector(model, MODEL_OPERATOR_CODES)
            val found = ArrayList<String>()
            for (i in 0 until n) {
                val code = table(start + 4 * i)
                val deprecated = field(code, OPCODE_DEPRECATED_BUILTIN)?.let { buf.get(it).toInt() } ?: 0
                val builtin = field(code, OPCODE_BUILTIN)?.let { int(it) } ?: 0
                if (maxOf(deprecated, builtin) == BUILTIN_CUSTOM) found.add(string(code, OPCODE_CUSTOM) ?: "?")
            }
            return found
        }

    /** The bytes of metadata entry [name], or null when the file has no such entry. */
    fun metadata(name: String): ByteArray? {
        val (start, n) = vector(model, MODEL_METADATA)
        val (bufStart, bufCount) = vector(model, MODEL_BUFFERS)
        for (i in 0 until n) {
            val entry = table(start + 4 * i)
            if (string(entry, METADATA_NAME) != name) continue
            val index = field(entry, METADATA_BUFFER)?.let { uint(it) } ?: 0L
            if (index >= bufCount) throw ModelFormatException("metadata '$name' points to buffer $index of $bufCount")
            val buffer = table(bufStart + 4 * index.toInt())
            val (dataStart, length) = vector(buffer, BUFFER_DATA)
            if (length > 0) return data.copyOfRange(dataStart, dataStart + length)
            // Large models keep buffers after the flatbuffer: Buffer.offset / Buffer.size (uint64).
            val offset = field(buffer, BUFFER_OFFSET)?.let { buf.getLong(check(it, 8)) } ?: 0L
            val size = field(buffer, BUFFER_SIZE)?.let { buf.getLong(check(it, 8)) } ?: 0L
            if (offset > 1 && size >= 0 && offset + size <= data.size) {
                return data.copyOfRange(offset.toInt(), (offset + size).toInt())
            }
            throw ModelFormatException("metadata '$name' has an empty buffer")
        }
        return null
    }

    private fun ioTensors(which: Int): List<TensorInfo> {
        val (sgStart, sgCount) = vector(model, MODEL_SUBGRAPHS)
        if (sgCount == 0) throw ModelFormatException("the model has no subgraph")
        val subgraph = table(sgStart)
        val (tStart, tCount) = vector(subgraph, SUBGRAPH_TENSORS)
        val (ioStart, ioCount) = vector(subgraph, which)
        return (0 until ioCount).map { i ->
            val index = int(ioStart + 4 * i)
            if (index < 0 || index >= tCount) throw ModelFormatException("tensor index $index out of range ($tCount tensors)")
            tensor(table(tStart + 4 * index))
        }
    }

    private fun tensor(t: Int): TensorInfo {
        val (shapeStart, rank) = vector(t, TENSOR_SHAPE)
        val shape = (0 until rank).map { int(shapeStart + 4 * it) }
        val type = field(t, TENSOR_TYPE)?.let { buf.get(check(it, 1)).toInt() } ?: 0
        val name = string(t, TENSOR_NAME) ?: ""
        var quant: QuantParams? = null
        field(t, TENSOR_QUANTIZATION)?.let { pos ->
            val q = pos + uint(pos).toInt()
            val (scaleStart, scales) = vector(q, QUANT_SCALE)
            val (zeroStart, zeros) = vector(q, QUANT_ZERO_POINT, elementSize = 8)
            if (scales == 1) {
                val zero = if (zeros >= 1) buf.getLong(check(zeroStart, 8)) else 0L
                quant = QuantParams(buf.getFloat(check(scaleStart, 4)).toDouble(), zero.toInt())
            } else if (scales > 1) {
                throw ModelContractException("tensor '$name' is quantised per channel ($scales scales); the app expects one scale")
            }
        }
        return TensorInfo(name, shape, TYPE_NAMES.getOrElse(type) { "type$type" }, quant)
    }

    // ---- flatbuffer primitives ------------------------------------------------------------------

    private fun check(pos: Int, size: Int): Int {
        if (pos < 0 || pos + size > data.size) throw ModelFormatException("the .tflite is truncated or corrupt (read past the end)")
        return pos
    }

    private fun int(pos: Int): Int = buf.getInt(check(pos, 4))
    private fun uint(pos: Int): Long = buf.getInt(check(pos, 4)).toLong() and 0xFFFFFFFFL
    private fun ushort(pos: Int): Int = buf.getShort(check(pos, 2)).toInt() and 0xFFFF

    /** The table that the uoffset stored at [pos] points to. */
    private fun table(pos: Int): Int = check(pos + uint(pos).toInt(), 4)

    /** Absolute position of field [index] of the table at [table], or null when absent. */
    private fun field(table: Int, index: Int): Int? {
        val vtable = table - int(table)
        val vtSize = ushort(vtable)
        if (4 + 2 * index >= vtSize) return null
        val offset = ushort(vtable + 4 + 2 * index)
        return if (offset == 0) null else table + offset
    }

    /** (first element, length) of a vector field; (0, 0) when absent. */
    private fun vector(table: Int, index: Int, elementSize: Int = 4): Pair<Int, Int> {
        val pos = field(table, index) ?: return Pair(0, 0)
        val vec = pos + uint(pos).toInt()
        val length = uint(vec)
        if (length > Int.MAX_VALUE / 8 || vec + 4 + length * elementSize > data.size) {
            throw ModelFormatException("the .tflite is truncated or corrupt (a vector runs past the end)")
        }
        return Pair(vec + 4, length.toInt())
    }

    private fun string(table: Int, index: Int): String? {
        val pos = field(table, index) ?: return null
        val start = pos + uint(pos).toInt()
        val length = uint(start)
        if (start + 4 + length > data.size) throw ModelFormatException("the .tflite is truncated or corrupt (a string runs past the end)")
        return String(data, start + 4, length.toInt(), Charsets.UTF_8)
    }

    companion object {
        // Field indices in schema.fbs.
        private const val MODEL_OPERATOR_CODES = 1
        private const val MODEL_SUBGRAPHS = 2
        private const val MODEL_BUFFERS = 4
        private const val MODEL_METADATA = 6
        private const val SUBGRAPH_TENSORS = 0
        private const val SUBGRAPH_INPUTS = 1
        private const val SUBGRAPH_OUTPUTS = 2
        private const val TENSOR_SHAPE = 0
        private const val TENSOR_TYPE = 1
        private const val TENSOR_NAME = 3
        private const val TENSOR_QUANTIZATION = 4
        private const val QUANT_SCALE = 2
        private const val QUANT_ZERO_POINT = 3
        private const val METADATA_NAME = 0
        private const val METADATA_BUFFER = 1
        private const val BUFFER_DATA = 0
        private const val BUFFER_OFFSET = 1
        private const val BUFFER_SIZE = 2
        private const val OPCODE_DEPRECATED_BUILTIN = 0
        private const val OPCODE_CUSTOM = 1
        private const val OPCODE_BUILTIN = 3
        private const val BUILTIN_CUSTOM = 32

        /** schema.fbs `enum TensorType`, by value, as numpy dtype names. */
        private val TYPE_NAMES = listOf(
            "float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64", "int8",
            "float64", "complex128", "uint64", "resource", "variant", "uint32", "uint16", "int4", "bfloat16",
        )

        /** Parses the file header; throws [ModelFormatException] for anything but a TFLite flatbuffer. */
        fun parse(bytes: ByteArray): TfliteModel {
            if (bytes.size < 8 || String(bytes, 4, 4, Charsets.US_ASCII) != "TFL3") {
                throw ModelFormatException("not a TFLite flatbuffer (no TFL3 identifier); export the model with dbd-export --format tflite")
            }
            try {
                return TfliteModel(bytes)
            } catch (e: IndexOutOfBoundsException) {
                throw ModelFormatException("the .tflite is truncated or corrupt")
            }
        }
    }
}
