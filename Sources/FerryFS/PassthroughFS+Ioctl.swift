import FerrySystem
import Glibc

/// The ioctls Ferry passes to the host: inode flags (chattr/lsattr) and the fsxattr struct.
/// Any other command answers ENOTTY, since an arbitrary ioctl could reach outside the file.
extension PassthroughFS {
    /// Commands served, with the size of their argument.
    enum SafeIoctl: UInt32 {
        case getFlags = 0x8008_6601      // FS_IOC_GETFLAGS (_IOR('f', 1, long))
        case setFlags = 0x4008_6602      // FS_IOC_SETFLAGS
        case getFlags32 = 0x8004_6601    // FS_IOC32_GETFLAGS
        case setFlags32 = 0x4004_6602    // FS_IOC32_SETFLAGS
        case fsGetXattr = 0x801c_581f    // FS_IOC_FSGETXATTR (struct fsxattr, 28 bytes)
        case fsSetXattr = 0x401c_5820    // FS_IOC_FSSETXATTR
    }

    /// Whether a successful `command` changes the inode (its flags and ctime) on the host.
    public static func ioctlChangesInode(_ command: UInt32) -> Bool {
        switch SafeIoctl(rawValue: command) {
        case .setFlags?, .setFlags32?, .fsSetXattr?: return true
        default: return false
        }
    }

    /// IOCTL on open file `fh`; returns the bytes to copy back to the caller (`outSize` at most).
    public func ioctl(fh: UInt64, command: UInt32, input: [UInt8], outSize: UInt32) throws(Errno) -> [UInt8] {
        guard let safe = SafeIoctl(rawValue: command) else { throw Errno.notTTY }
        let file = try openFiles.get(fh)
        let fd = file.fd.rawValue
        switch safe {
        case .getFlags, .getFlags32:
            var value: Int32 = 0
            try Host.ioctl(fd, request: UInt(safe == .getFlags ? SafeIoctl.getFlags.rawValue : SafeIoctl.getFlags32.rawValue),
                           value: &value)
            let bytes = withUnsafeBytes(of: value.littleEndian) { Array($0) }
            return Array((bytes + [UInt8](repeating: 0, count: 8))[0..<min(Int(outSize), 8)])
        case .setFlags, .setFlags32:
            try checkWritable()
            guard input.count >= 4 else { throw Errno.invalid }
            var value = input.withUnsafeBytes { Int32(littleEndian: $0.loadUnaligned(as: Int32.self)) }
            try Host.ioctl(fd, request: UInt(safe.rawValue), value: &value)
            return []
        case .fsGetXattr:
            var bytes = [UInt8](repeating: 0, count: 28)
            try Host.ioctl(fd, request: UInt(safe.rawValue), bytes: &bytes)
            return Array(bytes.prefix(Int(outSize)))
        case .fsSetXattr:
            try checkWritable()
            guard input.count >= 28 else { throw Errno.invalid }
            var bytes = Array(input.prefix(28))
            try Host.ioctl(fd, request: UInt(safe.rawValue), bytes: &bytes)
            return []
        }
    }

    /// SYNCFS: syncs the shared directory's file system.
    public func syncfs() throws(Errno) {
        try Host.syncfs(rootDirectory.rawValue)
    }
}
