@testable import FerryProtocol

/// Builds request bytes exactly as the kernel lays them out (fuse_in_header + arguments).
struct RequestBytes {
    var body: [UInt8] = []

    mutating func u16(_ v: UInt16) { body += withUnsafeBytes(of: v.littleEndian, Array.init) }
    mutating func u32(_ v: UInt32) { body += withUnsafeBytes(of: v.littleEndian, Array.init) }
    mutating func u64(_ v: UInt64) { body += withUnsafeBytes(of: v.littleEndian, Array.init) }
    mutating func name(_ s: String) { body += Array(s.utf8) + [0] }

    /// The whole message for `opcode`, with a header whose length matches.
    func message(_ opcode: Opcode, unique: UInt64 = 7, node: UInt64 = 1, extLength: UInt16 = 0,
                 lengthAdjust: Int = 0) -> [UInt8] {
        var h = RequestBytes()
        h.u32(UInt32(40 + body.count + lengthAdjust)); h.u32(opcode.rawValue); h.u64(unique); h.u64(node)
        h.u32(1000); h.u32(100); h.u32(4242); h.u16(extLength); h.u16(0)
        return h.body + body
    }
}

func decode(_ bytes: [UInt8]) throws(DecodeError) -> Request {
    let copy = bytes
    return try copy.withUnsafeBytes { raw in
        Result { () throws(DecodeError) in try RequestDecoder.decode(ByteView(raw)) }
    }.get()
}

/// Encodes into a fresh buffer and returns the bytes.
func encoded(_ body: (inout WireWriter) -> Void) -> [UInt8] {
    let buffer = MessageBuffer(capacity: 4096)
    var writer = WireWriter(buffer)
    body(&writer)
    return writer.written.bytes
}
