import CFerrySys
import Glibc

/// Extended attributes of the file behind an O_PATH descriptor (through /proc/self/fd, since
/// the f*xattr calls refuse O_PATH descriptors). The /proc link jumps to the descriptor's own
/// inode and goes no further, so for an O_NOFOLLOW descriptor of a symlink these reach the
/// symlink itself, never its target.
extension Host {
    /// getxattr(2); `size` 0 asks for the value's size. Returns the value (or just its size).
    public static func getxattr(_ fd: Int32, _ name: CName, size: Int) throws(Errno) -> (size: Int, value: [UInt8]) {
        var value = [UInt8](repeating: 0, count: size)
        let n = try procSelfFD(fd).withCString { (path) throws(Errno) in
            try name.withCString { (attr) throws(Errno) in
                try retrying {
                    value.withUnsafeMutableBytes { raw in CFerrySys.getxattr(path, attr, size == 0 ? nil : raw.baseAddress, size) }
                }
            }
        }
        return (n, size == 0 ? [] : Array(value[0..<n]))
    }

    /// listxattr(2); `size` 0 asks for the list's size.
    public static func listxattr(_ fd: Int32, size: Int) throws(Errno) -> (size: Int, names: [UInt8]) {
        var value = [UInt8](repeating: 0, count: size)
        let n = try procSelfFD(fd).withCString { (path) throws(Errno) in
            try retrying {
                value.withUnsafeMutableBytes { raw in
                    CFerrySys.listxattr(path, size == 0 ? nil : raw.baseAddress?.assumingMemoryBound(to: CChar.self), size)
                }
            }
        }
        return (n, size == 0 ? [] : Array(value[0..<n]))
    }

    /// setxattr(2).
    public static func setxattr(_ fd: Int32, _ name: CName, value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        _ = try procSelfFD(fd).withCString { (path) throws(Errno) in
            try name.withCString { (attr) throws(Errno) in
                try retrying { CFerrySys.setxattr(path, attr, value.baseAddress, value.count, flags) }
            }
        }
    }

    /// removexattr(2).
    public static func removexattr(_ fd: Int32, _ name: CName) throws(Errno) {
        _ = try procSelfFD(fd).withCString { (path) throws(Errno) in
            try name.withCString { (attr) throws(Errno) in try retrying { CFerrySys.removexattr(path, attr) } }
        }
    }
}
