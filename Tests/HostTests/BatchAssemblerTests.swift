import Foundation
import MLProxyHost
import PluginAPI
import Testing

@Suite("Merging and splitting batches")
struct BatchAssemblerTests {
    /// Input "x" FP64 [n, 2] whose rows are (base + i, 1) and input "s" BYTES [n] of "r<base+i>".
    func request(base: Int, items: Int) -> [Tensor] {
        let x = Tensor.fp64(
            name: "x", shape: [Int64(items), 2], values: (0..<items).flatMap { [Double(base + $0), 1] })
        var bytes: [UInt8] = []
        for i in 0..<items {
            let s = Array("r\(base + i)".utf8)
            withUnsafeBytes(of: UInt32(s.count).littleEndian) { bytes += $0 }
            bytes += s
        }
        let storage = bytes.withUnsafeBytes { TensorStorage(bytes: $0) }
        let str = Tensor(name: "s", datatype: .bytes, shape: [Int64(items)], storage: storage)
        return [x, str]
    }

    @Test func requestsOfOneThreeAndSevenItemsGetTheirOwnRows() throws {
        let requests = [request(base: 0, items: 1), request(base: 100, items: 3), request(base: 200, items: 7)]
        for r in requests { #expect(try BatchAssembler.validate(inputs: r) == r[0].items) }
        let keys = Set(requests.map { BatchAssembler.batchKey(of: $0) })
        #expect(keys.count == 1)

        let merged = BatchAssembler.merge(requests)
        let x = try #require(merged.first { $0.name == "x" })
        let s = try #require(merged.first { $0.name == "s" })
        #expect(x.shape == [11, 2])
        #expect(s.shape == [11])
        #expect(x.validate() == nil)
        #expect(s.validate() == nil)

        // What a model would answer: per row, x[0] as FP64 and the string back as BYTES.
        let firstColumn = stride(from: 0, to: 22, by: 2).map { x.doubles()[$0] }
        let outputs = [Tensor.fp64(name: "y", shape: [11, 1], values: firstColumn), s]
        let parts = try BatchAssembler.split(outputs, itemCounts: [1, 3, 7])
        #expect(parts.count == 3)
        for (part, (base, items)) in zip(parts, [(0, 1), (100, 3), (200, 7)]) {
            let y = try #require(part.first { $0.name == "y" })
            #expect(y.shape == [Int64(items), 1])
            #expect(y.doubles() == (0..<items).map { Double(base + $0) })
            let str = try #require(part.first { $0.name == "s" })
            #expect(str.validate() == nil)
            let expected = request(base: base, items: items)[1]
            #expect(Array(str.bytes) == Array(expected.bytes))
        }
    }

    @Test func differentTrailingShapesHaveDifferentKeys() {
        let a = [Tensor.fp64(name: "x", shape: [1, 2], values: [1, 2])]
        let b = [Tensor.fp64(name: "x", shape: [1, 3], values: [1, 2, 3])]
        #expect(BatchAssembler.batchKey(of: a) != BatchAssembler.batchKey(of: b))
    }

    @Test func replyWithWrongDimZeroFailsClearly() {
        let out = [Tensor.fp64(name: "y", shape: [3, 1], values: [1, 2, 3])]
        guard
            case .failure(let e) = outcome({ () throws(RequestError) in
                try BatchAssembler.split(out, itemCounts: [1, 3])
            })
        else {
            Issue.record("split must fail")
            return
        }
        #expect(e.status == 502)
        #expect(e.message.contains("dim 0 = 3"))
    }

    @Test func validationNamesTheProblem() {
        let good = Tensor.fp64(name: "x", shape: [2, 1], values: [1, 2])
        let other = Tensor.fp64(name: "y", shape: [3, 1], values: [1, 2, 3])
        guard
            case .failure(let e) = outcome({ () throws(RequestError) in
                try BatchAssembler.validate(inputs: [good, other])
            })
        else {
            Issue.record("dim 0 mismatch must fail")
            return
        }
        #expect(e.status == 400)
        #expect(e.message.contains("dim 0"))
        let short = Tensor(name: "z", datatype: .fp32, shape: [2, 2], storage: TensorStorage(count: 12))
        #expect(short.validate()?.contains("needs 16 bytes") == true)
    }

    @Test func paddingGrowsTrailingDimsWithThePadValue() {
        let a = [Tensor.fp64(name: "x", shape: [1, 2], values: [1, 2])]
        let b = [Tensor.fp64(name: "x", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])]
        #expect(BatchAssembler.batchKey(of: a, padded: true) == BatchAssembler.batchKey(of: b, padded: true))
        let c = [Tensor.fp64(name: "x", shape: [1, 2, 1], values: [1, 2])]
        #expect(
            BatchAssembler.batchKey(of: a, padded: true) != BatchAssembler.batchKey(of: c, padded: true), "ranks differ"
        )
        let merged = BatchAssembler.merge([a, b], padValue: -1)
        #expect(merged[0].shape == [3, 3])
        #expect(merged[0].doubles() == [1, 2, -1, 1, 2, 3, 4, 5, 6])
        // Two trailing dims, an integer type, padding in both.
        func int32(_ shape: [Int64], _ v: [Int32]) -> Tensor {
            Tensor(name: "m", datatype: .int32, shape: shape, storage: v.withUnsafeBytes { TensorStorage(bytes: $0) })
        }
        let grid = BatchAssembler.merge([[int32([1, 1, 2], [1, 2])], [int32([1, 2, 1], [3, 4])]], padValue: 9)
        #expect(grid[0].shape == [2, 2, 2])
        #expect(grid[0].doubles() == [1, 2, 9, 9, 3, 9, 4, 9])
        // BYTES pad with empty elements; the simulated server counts lengths, so "r7" + "" = 2.
        let s1 = request(base: 7, items: 1)[1]
        var two: [UInt8] = []
        for word in ["ab", "cde"] {
            withUnsafeBytes(of: UInt32(word.utf8.count).littleEndian) { two += $0 }
            two += Array(word.utf8)
        }
        let s2 = Tensor(
            name: "s", datatype: .bytes, shape: [1, 2], storage: two.withUnsafeBytes { TensorStorage(bytes: $0) })
        let s1Wide = Tensor(name: "s", datatype: .bytes, shape: [1, 1], storage: s1.storage)
        let words = BatchAssembler.merge([[s1Wide], [s2]], padValue: 0)[0]
        #expect(words.shape == [2, 2] && words.validate() == nil)
        #expect(words.doubles() == [2, 0, 2, 3])
    }
}
