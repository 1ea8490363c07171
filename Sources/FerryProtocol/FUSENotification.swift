/// Notify codes: the `error` field of a `fuse_out_header` whose `unique` is 0.
public enum NotifyCode: Int32, Sendable {
    case poll = 1, invalidateInode = 2, invalidateEntry = 3, store = 4, retrieve = 5
    case delete = 6, resend = 7, incrementEpoch = 8, prune = 9
}

/// A message the server sends to the kernel unasked, to drop what the kernel caches.
/// Written to /dev/fuse like a reply, never from inside a request handler.
public enum FUSENotification: Sendable, Equatable {
    /// FUSE_NOTIFY_INVAL_INODE: drop `node`'s attributes, and its cached data from `offset`
    /// for `length` bytes (length 0: to the end). `offset` -1 keeps the data.
    case invalidateInode(node: UInt64, offset: Int64, length: Int64)
    /// FUSE_NOTIFY_INVAL_ENTRY: drop the cached name `name` in directory `parent`.
    case invalidateEntry(parent: UInt64, name: [UInt8])
    /// FUSE_NOTIFY_DELETE: `name` in `parent`, which named `child`, is gone (the kernel
    /// also treats `child` as unlinked there).
    case delete(parent: UInt64, child: UInt64, name: [UInt8])
    /// FUSE_NOTIFY_INC_EPOCH: every name the kernel cached so far must be looked up again.
    case incrementEpoch

    /// The FUSE minor version that introduced the message.
    public var minimumMinor: UInt32 {
        switch self {
        case .invalidateInode, .invalidateEntry: return 12
        case .delete: return 18
        case .incrementEpoch: return 44
        }
    }

    /// The notify code in the header.
    public var code: NotifyCode {
        switch self {
        case .invalidateInode: return .invalidateInode
        case .invalidateEntry: return .invalidateEntry
        case .delete: return .delete
        case .incrementEpoch: return .incrementEpoch
        }
    }

    /// Largest encoded message: header, the 24-byte fixed part, a NAME_MAX name and its NUL.
    public static let maxSize = FUSEABI.outHeaderSize + 24 + 256

    /// Encodes the whole message (header included) into `buffer` and returns it.
    public func encode(into buffer: MessageBuffer) -> ByteView {
        var writer = WireWriter(buffer)
        ReplyFraming.beginNotification(&writer)
        switch self {
        case let .invalidateInode(node, offset, length):
            writer.append(node); writer.append(offset); writer.append(length)
        case let .invalidateEntry(parent, name):
            // fuse_notify_inval_entry_out: u64 parent, u32 namelen, u32 flags; name; NUL.
            writer.append(parent); writer.append(UInt32(name.count)); writer.append(UInt32(0))
            writer.append(bytes: name); writer.append(UInt8(0))
        case let .delete(parent, child, name):
            // fuse_notify_delete_out: u64 parent, u64 child, u32 namelen, u32 padding; name; NUL.
            writer.append(parent); writer.append(child); writer.append(UInt32(name.count)); writer.append(UInt32(0))
            writer.append(bytes: name); writer.append(UInt8(0))
        case .incrementEpoch:
            break
        }
        ReplyFraming.finishNotification(&writer, code: code.rawValue)
        return writer.written
    }
}
