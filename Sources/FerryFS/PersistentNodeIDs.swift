import FerrySystem

/// Node ids that are a function of the host file: the bytes of its file handle
/// (name_to_handle_at), read as one little-endian u64.
///
/// Such an id names the same host file after the kernel forgot the node, after a remount and
/// after a server restart, so file handles of the mount (which carry the node id) stay valid;
/// and since the host handle holds the inode's generation, a new file that reuses an inode
/// number gets a different id. The id also turns back into the host handle, so LOOKUP(".") of
/// a node Ferry no longer holds can find its file (protocol/fuse-abi.md, "File handles").
///
/// Only handles shaped like the shared root's qualify: the same handle type and length, with
/// at most 8 significant bytes (any bytes past the eighth must be zero). ext4 and xfs give
/// FILEID_INO32_GEN handles (inode number and generation, 8 bytes); tmpfs gives 12 bytes whose
/// last word, the high half of the inode number, is zero in practice. btrfs handles (20 bytes
/// and more) never qualify.
public struct PersistentNodeIDs: Sendable, Equatable {
    /// The handle type every qualifying handle has (the root's).
    public let handleType: Int32
    /// The handle length every qualifying handle has (the root's).
    public let handleLength: Int

    /// Handles longer than this are never considered (the tail must be zeros anyway).
    static let maxHandleLength = 16

    /// The layout of the shared root's handle, or nil if that handle cannot be a node id.
    public init?(rootHandle: FileHandle) {
        guard (1...PersistentNodeIDs.maxHandleLength).contains(rootHandle.bytes.count),
              rootHandle.bytes.dropFirst(8).allSatisfy({ $0 == 0 }) else { return nil }
        handleType = rootHandle.type
        handleLength = rootHandle.bytes.count
    }

    /// The node id derived from `handle`, or nil when the handle does not qualify or its id
    /// would be 0 (no node) or 1 (the root's id, fixed by FUSE).
    public func nodeID(for handle: FileHandle) -> UInt64? {
        guard handle.type == handleType, handle.bytes.count == handleLength,
              handle.bytes.dropFirst(8).allSatisfy({ $0 == 0 }) else { return nil }
        var id: UInt64 = 0
        for (index, byte) in handle.bytes.prefix(8).enumerated() { id |= UInt64(byte) << (8 * UInt64(index)) }
        return id > InodeStore.rootID ? id : nil
    }

    /// The host file handle `nodeID` was derived from, or nil if no qualifying handle gives it.
    public func handle(for nodeID: UInt64) -> FileHandle? {
        guard nodeID > InodeStore.rootID else { return nil }
        let significant = min(handleLength, 8)
        guard significant == 8 || nodeID >> (8 * UInt64(significant)) == 0 else { return nil }
        var bytes = (0..<significant).map { UInt8(truncatingIfNeeded: nodeID >> (8 * UInt64($0))) }
        bytes += [UInt8](repeating: 0, count: handleLength - significant)
        return FileHandle(bytes: bytes, type: handleType)
    }
}
