package com.dbd.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class JsonTest {
    @Test
    fun parsesWhatPythonJsonDumpsWrites() {
        val doc = Json.parse(
            """{"a":[1,-128,0.00390625,1e-3,2.5E+2,true,false,null],"s":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n","o":{}}""",
        ) as Map<*, *>
        val a = doc["a"] as List<*>
        assertEquals(1L, a[0])
        assertEquals(-128L, a[1])
        assertEquals(0.00390625, a[2])
        assertEquals(0.001, a[3])
        assertEquals(250.0, a[4])
        assertEquals(true, a[5])
        assertEquals(false, a[6])
        assertNull(a[7])
        assertEquals("café \uD83D\uDE00 \"q\" \\ / \n", doc["s"])
        assertEquals(emptyMap<String, Any?>(), doc["o"])
        assertEquals(listOf(1L, 2L), Json.parse(" [ 1 , 2 ] "))
        assertEquals(0.1 + 0.2, Json.parse("0.30000000000000004"))
    }

    @Test
    fun refusesMalformedDocuments() {
        for (bad in listOf("{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", "\"abc", "tru", "{\"a\":1,\"a\":2}", "[1] x", "\"\\x\"", "-", "NaN")) {
            try {
                Json.parse(bad)
                fail("accepted $bad")
            } catch (e: DbdException) {
                assertTrue(e.message!!, e.message!!.startsWith("invalid JSON at character"))
            }
        }
    }

    @Test
    fun typedAccessNamesTheKeyPath() {
        val obj = JsonObject.parse("""{"input": {"size": [2, "x"]}}""", "doc")
        try {
            obj.obj("input").ints("size")
            fail()
        } catch (e: ModelContractException) {
            assertEquals("metadata 'input.size' holds a non-integer", e.message)
        }
        try {
            obj.obj("output")
            fail()
        } catch (e: ModelContractException) {
            assertEquals("metadata has no 'output'", e.message)
        }
    }
}
