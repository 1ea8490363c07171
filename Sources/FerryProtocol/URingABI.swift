/// The FUSE-over-io_uring ABI (FUSE 7.42, Linux 6.14): the layouts a ring entry shares with the
/// kernel and the command area of its submissions. Pure layouts; protocol/fuse-uring.md is the
/// written contract and the tests check these numbers against it.
public enum FUSERingABI {
    /// `fuse_uring_cmd` values carried in the SQE's `cmd_op`.
    public enum Command: UInt32, Sendable {
        /// Hand an idle entry (header and payload buffer) to the kernel for its first request.
        case register = 1
        /// Commit the reply in the entry's buffers and hand the entry back for the next request.
        case commitAndFetch = 2
    }

    /// `struct fuse_uring_req_header`: in_out[128], op_in[128], fuse_uring_ent_in_out.
    public static let requestHeaderSize = 288
    /// Offset of `in_out`: `fuse_in_header` on a request, `fuse_out_header` on a reply.
    public static let inOutOffset = 0
    /// Size of `in_out`.
    public static let inOutSize = 128
    /// Offset of `op_in`: the opcode's first (fixed) argument, when it has one.
    public static let opInOffset = 128
    /// Size of `op_in`.
    public static let opInSize = 128
    /// Offset of `struct fuse_uring_ent_in_out`.
    public static let entInOutOffset = 256
    /// Size of `struct fuse_uring_ent_in_out { u64 flags; u64 commit_id; u32 payload_sz; u32 padding; u64 reserved }`.
    public static let entInOutSize = 32
    /// Offsets inside `fuse_uring_ent_in_out`.
    public static let entFlagsOffset = 0, entCommitIDOffset = 8, entPayloadSizeOffset = 16

    /// `struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6] }`, written
    /// into the 80-byte command area of a 128-byte SQE.
    public static let commandSize = 24
    /// Offsets inside `fuse_uring_cmd_req`.
    public static let commandFlagsOffset = 0, commandCommitIDOffset = 8, commandQueueIDOffset = 16
    /// Bytes of command data a 128-byte SQE (IORING_SETUP_SQE128) carries.
    public static let sqeCommandAreaSize = 80

    /// Number of iovecs a REGISTER names (header buffer, payload buffer).
    public static let iovecCount = 2
    /// The smallest payload buffer the kernel takes: max(FUSE_MIN_READ_BUFFER, max_write,
    /// max_pages * page size), where FUSE_MIN_READ_BUFFER is 8192.
    public static func payloadSize(maxWrite: UInt32, maxPages: UInt16, pageSize: Int = 4096) -> Int {
        max(8192, Int(maxWrite), Int(maxPages) * pageSize)
    }
}

/// The request a ring entry holds, read from its header buffer: where the three parts of the
/// classic /dev/fuse request message are.
public struct RingRequestLayout: Sendable, Equatable {
    /// The request's `fuse_in_header.len`: header, all arguments and extensions.
    public var length: Int
    /// Bytes of `op_in` that belong to the request (the opcode's first argument; 0 for ops the
    /// kernel sends without one, e.g. LOOKUP's name goes to the payload).
    public var opInLength: Int
    /// Bytes in the payload buffer (`fuse_uring_ent_in_out.payload_sz`).
    public var payloadLength: Int
    /// The entry's commit id (the request's unique), needed to commit the reply.
    public var commitID: UInt64

    public init(length: Int, opInLength: Int, payloadLength: Int, commitID: UInt64) {
        self.length = length; self.opInLength = opInLength; self.payloadLength = payloadLength; self.commitID = commitID
    }

    /// Reads the layout from `header` (the entry's 288-byte header buffer); nil when the sizes
    /// do not add up (the kernel would have to break its own contract).
    public init?(header: ByteView, payloadCapacity: Int) {
        guard header.count >= FUSERingABI.requestHeaderSize,
              let length = header.load(UInt32.self, at: FUSERingABI.inOutOffset),
              let payload = header.load(UInt32.self, at: FUSERingABI.entInOutOffset + FUSERingABI.entPayloadSizeOffset),
              let commitID = header.load(UInt64.self, at: FUSERingABI.entInOutOffset + FUSERingABI.entCommitIDOffset)
        else { return nil }
        let opIn = Int(length) - FUSEABI.inHeaderSize - Int(payload)
        guard opIn >= 0, opIn <= FUSERingABI.opInSize, Int(payload) <= payloadCapacity else { return nil }
        self.length = Int(length)
        self.opInLength = opIn
        self.payloadLength = Int(payload)
        self.commitID = commitID
    }
}
