import Foundation
import MLProxyHost
import NIOCore
import Testing

/// The v2 JSON codec's numbers: read by the simdjson decoder, written in their shortest form (the
/// float's own for FP32, not the double's), integral values with ".0", non-finite ones as null.
@Suite("v2 JSON numbers")
struct JSONCodecTests {
    func roundTrip(_ datatype: String, _ data: String) throws -> String {
        let codec = try CodecInstance(try bundledPlugins.component(.codec, "json"))
        let count = data.split(separator: ",").count
        let body =
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"\(datatype)\",\"shape\":[\(count)],\"data\":[\(data)]}]}"
        let decoded = try codec.decode(body: ByteBuffer(string: body), contentType: "application/json", model: "m")
        let encoded = try codec.encode(
            model: "m", version: "", id: nil, outputs: decoded.inputs, parametersJSON: nil,
            allocator: ByteBufferAllocator())
        let text = String(buffer: encoded.body)
        let start = try #require(text.range(of: "\"data\":["))
        return String(text[start.upperBound...].prefix { $0 != "]" })
    }

    @Test func floatsComeBackInTheirShortestForm() throws {
        // 0.1 as FP32 is 0.100000001490116...: the float's shortest form is "0.1", the double's is not.
        #expect(
            try roundTrip("FP32", "0.1,3,-0.0,1e-7,16777216,0.30000001192092896,1e20")
                == "0.1,3.0,-0.0,1e-07,16777216.0,0.3,1e+20")
        #expect(try roundTrip("FP64", "0.1,2.5,-1e-300,123456789012345678") == "0.1,2.5,-1e-300,123456789012345680.0")
        #expect(try roundTrip("FP16", "0.1,65504,-2") == "0.099975586,65504.0,-2.0")
        #expect(try roundTrip("INT64", "-9223372036854775808,0,42") == "-9223372036854775808,0,42")
    }

    @Test func theSameErrorsAsBefore() throws {
        let codec = try CodecInstance(try bundledPlugins.component(.codec, "json"))
        func error(_ body: String) -> String {
            do {
                _ = try codec.decode(body: ByteBuffer(string: body), contentType: "application/json", model: "m")
                return ""
            } catch { return error.message }
        }
        #expect(
            error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT8\",\"shape\":[1],\"data\":[300]}]}")
                == "input 'x': element 0 = 300 is out of range for INT8")
        #expect(
            error("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1]}]}")
                == "input 'x': shape has 2 elements but data has 1")
        #expect(error("{\"inputs\": [").hasPrefix("request body is not valid JSON: "))
        // jansson refuses integers beyond int64 anywhere in the body; so does the proxy, still.
        #expect(error("{\"n\":18446744073709551615,\"inputs\":[]}").contains("too big integer"))
    }
}
