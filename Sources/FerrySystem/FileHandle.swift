import CFerrySys

/// A file handle from name_to_handle_at(2): names an inode without holding a descriptor, so a
/// server can know millions of files under RLIMIT_NOFILE.
public struct FileHandle: Sendable, Hashable {
    /// The opaque handle bytes.
    public let bytes: [UInt8]
    /// The handle type the file system reported.
    public let type: Int32

    public init(bytes: [UInt8], type: Int32) {
        self.bytes = bytes
        self.type = type
    }

    /// The handle and mount id of `name` in `dir` (`.empty` with AT_EMPTY_PATH for `dir` itself).
    /// Throws EOPNOTSUPP where the file system cannot make handles.
    public static func of(_ dir: Int32, _ name: CName = .empty) throws(Errno) -> (handle: FileHandle, mountID: Int32) {
        var raw = [UInt8](repeating: 0, count: Int(FERRY_MAX_HANDLE_SZ))
        var size: UInt32 = 0, type: Int32 = 0, mountID: Int32 = 0
        let flags = name.isEmpty ? HostFlags.atEmptyPath : 0
        _ = try name.withCString { (path) throws(Errno) in
            try checked { ferry_name_to_handle_at(dir, path, flags, &raw, &size, &type, &mountID) }
        }
        return (FileHandle(bytes: Array(raw[0..<Int(size)]), type: type), mountID)
    }

    /// Opens the inode with `flags` (typically O_PATH) through a descriptor on its mount.
    /// Needs CAP_DAC_READ_SEARCH; fails with ESTALE once the inode is gone.
    public func open(mountFD: Int32, flags: Int32) throws(Errno) -> Int32 {
        try checked { ferry_open_by_handle_at(mountFD, bytes, UInt32(bytes.count), type, flags | HostFlags.oCloexec) }
    }
}
