package com.dbd.core

/**
 * A small, strict JSON parser (RFC 8259) so the core needs neither Android's org.json nor a
 * library. Objects become `Map<String, Any?>` (insertion-ordered), arrays `List<Any?>`, strings
 * `String`, numbers `Long` (integers that fit) or `Double`, and `true`/`false`/`null` themselves.
 */
object Json {
    fun parse(text: String): Any? {
        val parser = Parser(text)
        parser.skipWhitespace()
        val value = parser.value()
        parser.skipWhitespace()
        if (parser.pos != text.length) parser.fail("unexpected trailing characters")
        return value
    }

    private class Parser(val s: String) {
        var pos = 0

        fun fail(what: String): Nothing =
            throw DbdException("invalid JSON at character $pos: $what")

        fun skipWhitespace() {
            while (pos < s.length && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t')) pos++
        }

        fun value(): Any? {
            if (pos >= s.length) fail("unexpected end of input")
            return when (val c = s[pos]) {
                '{' -> obj()
                '[' -> array()
                '"' -> string()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c in '0'..'9') number() else fail("unexpected character '$c'")
            }
        }

        fun literal(word: String, result: Any?): Any? {
            if (!s.startsWith(word, pos)) fail("expected '$word'")
            pos += word.length
            return result
        }

        fun obj(): Map<String, Any?> {
            val map = LinkedHashMap<String, Any?>()
            pos++ // {
            skipWhitespace()
            if (pos < s.length && s[pos] == '}') { pos++; return map }
            while (true) {
                skipWhitespace()
                if (pos >= s.length || s[pos] != '"') fail("expected a string key")
                val key = string()
                skipWhitespace()
                if (pos >= s.length || s[pos] != ':') fail("expected ':' after key \"$key\"")
                pos++
                skipWhitespace()
                if (map.containsKey(key)) fail("duplicate key \"$key\"")
                map[key] = value()
                skipWhitespace()
                if (pos >= s.length) fail("unterminated object")
                when (s[pos]) {
                    ',' -> pos++
                    '}' -> { pos++; return map }
                    else -> fail("expected ',' or '}'")
                }
            }
        }

        fun array(): List<Any?> {
            val list = ArrayList<Any?>()
            pos++ // [
            skipWhitespace()
            if (pos < s.length && s[pos] == ']') { pos++; return list }
            while (true) {
                skipWhitespace()
                list.add(value())
                skipWhitespace()
                if (pos >= s.length) fail("unterminated array")
                when (s[pos]) {
                    ',' -> pos++
                    ']' -> { pos++; return list }
                    else -> fail("expected ',' or ']'")
                }
            }
        }

        fun string(): String {
            pos++ // opening quote
            val out = StringBuilder()
            while (true) {
                if (pos >= s.length) fail("unterminated string")
                val c = s[pos++]
                when {
                    c == '"' -> return out.toString()
                    c == '\\' -> {
                        if (pos >= s.length) fail("unterminated escape")
                        when (val e = s[pos++]) {
                            '"' -> out.append('"')
                            '\\' -> out.append('\\')
                            '/' -> out.append('/')
                            'b' -> out.append('\b')
                            'f' -> out.append('\u000C')
                            'n' -> out.append('\n')
                            'r' -> out.append('\r')
                            't' -> out.append('\t')
                            'u' -> {
                                if (pos + 4 > s.length) fail("truncated \\u escape")
                                val code = s.substring(pos, pos + 4).toIntOrNull(16) ?: fail("bad \\u escape")
                                out.append(Char(code))   // surrogate pairs arrive as two escapes
                                pos += 4
                            }
                            else -> fail("bad escape '\\$e'")
                        }
                    }
                    c < ' ' -> fail("control character in string")
                    else -> out.append(c)
                }
            }
        }

        fun number(): Any {
            val start = pos
            if (s[pos] == '-') pos++
            if (pos >= s.length) fail("truncated number")
            if (s[pos] == '0') pos++
            else if (s[pos] in '1'..'9') while (pos < s.length && s[pos] in '0'..'9') pos++
            else fail("bad number")
            var integral = true
            if (pos < s.length && s[pos] == '.') {
                integral = false
                pos++
                val digits = pos
                while (pos < s.length && s[pos] in '0'..'9') pos++
                if (pos == digits) fail("bad fraction")
            }
            if (pos < s.length && (s[pos] == 'e' || s[pos] == 'E')) {
                integral = false
                pos++
                if (pos < s.length && (s[pos] == '+' || s[pos] == '-')) pos++
                val digits = pos
                while (pos < s.length && s[pos] in '0'..'9') pos++
                if (pos == digits) fail("bad exponent")
            }
            val text = s.substring(start, pos)
            if (integral) text.toLongOrNull()?.let { return it }
            return text.toDouble()   // correctly rounded, like Python's float()
        }
    }
}

/** Typed access to a parsed JSON object, with errors that name the key path. */
class JsonObject(private val map: Map<String, Any?>, private val path: String) {
    fun has(key: String): Boolean = map.containsKey(key)
    fun isNull(key: String): Boolean = map[key] == null
    val keys: Set<String> get() = map.keys

    /** The parsed value as is (String, Long, Double, Boolean, List, Map or null), for checks by type. */
    fun value(key: String): Any? = map[key]

    /** The dotted path of [key] in the document, for error messages. */
    fun pathOf(key: String): String = where(key)

    private fun raw(key: String): Any? {
        if (!map.containsKey(key)) throw ModelContractException("metadata has no '${where(key)}'")
        return map[key]
    }

    private fun where(key: String) = if (path.isEmpty()) key else "$path.$key"

    fun obj(key: String): JsonObject {
        @Suppress("UNCHECKED_CAST")
        val v = raw(key) as? Map<String, Any?>
            ?: throw ModelContractException("metadata '${where(key)}' is not a JSON object")
        return JsonObject(v, where(key))
    }

    fun objOrNull(key: String): JsonObject? = if (map[key] == null) null else obj(key)

    fun string(key: String): String =
        raw(key) as? String ?: throw ModelContractException("metadata '${where(key)}' is not a string")

    fun stringOr(key: String, default: String): String = if (map[key] == null) default else string(key)

    fun double(key: String): Double =
        (raw(key) as? Number)?.toDouble() ?: throw ModelContractException("metadata '${where(key)}' is not a number")

    fun long(key: String): Long {
        val v = raw(key)
        if (v is Long) return v
        if (v is Double && v == Math.floor(v) && !v.isInfinite()) return v.toLong()
        throw ModelContractException("metadata '${where(key)}' is not an integer")
    }

    fun doubles(key: String): List<Double> {
        val v = raw(key) as? List<*> ?: throw ModelContractException("metadata '${where(key)}' is not a list")
        return v.map { (it as? Number)?.toDouble() ?: throw ModelContractException("metadata '${where(key)}' holds a non-number") }
    }

    fun ints(key: String): List<Int> {
        val v = raw(key) as? List<*> ?: throw ModelContractException("metadata '${where(key)}' is not a list")
        return v.map {
            (it as? Long)?.toInt() ?: throw ModelContractException("metadata '${where(key)}' holds a non-integer")
        }
    }

    companion object {
        fun parse(text: String, what: String): JsonObject {
            val value = try {
                Json.parse(text)
            } catch (e: DbdException) {
                throw ModelContractException("$what is not valid JSON (${e.message})")
            }
            @Suppress("UNCHECKED_CAST")
            val map = value as? Map<String, Any?> ?: throw ModelContractException("$what is not a JSON object")
            return JsonObject(map, "")
        }
    }
}
