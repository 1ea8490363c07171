import CFerrySys
import Glibc

/// Extended attributes of the file behind an O_PATH descriptor (through /proc/self/fd, since
/// the f*xattr calls refuse O_PATH descriptors). The /proc link jumps to the descriptor's own
/// inode and goes no further, so for an O_NOFOLLOW descriptor of a symlink these reach the
/// symlink itself, never its target. On Linux 6.13 and later the *xattrat calls start the
/// lookup at a kept /proc/self/fd descriptor (`ProcSelfFD`); before, the full path is used.
extension Host {
    /// Runs the *xattrat form of a call, or the path form on kernels without it.
    private static func xattrCall<T: BinaryInteger>(_ fd: Int32, at: (Int32, UnsafePointer<CChar>) -> T,
                                                    path: (UnsafePointer<CChar>) -> T) throws(Errno) -> T {
        if ProcSelfFD.hasXattrAt.load(ordering: .relaxed) {
            do {
                return try ProcSelfFD.with(fd) { (dir, name) throws(Errno) in try retrying { at(dir, name) } }
            } catch .noSys {
                ProcSelfFD.hasXattrAt.store(false, ordering: .relaxed)
            }
        }
        return try procSelfFD(fd).withCString { (p) throws(Errno) in try retrying { path(p) } }
    }

    /// getxattr(2); `size` 0 asks for the value's size. Returns the value (or just its size).
    public static func getxattr(_ fd: Int32, _ name: CName, size: Int) throws(Errno) -> (size: Int, value: [UInt8]) {
        var value = [UInt8](repeating: 0, count: size)
        let n = try name.withCString { (attr) throws(Errno) in
            try value.withUnsafeMutableBytes { raw in
                let buffer = size == 0 ? nil : raw.baseAddress
                return Result { () throws(Errno) in
                    try xattrCall(fd, at: { dir, link in ferry_getxattrat(dir, link, attr, buffer, size) },
                                  path: { p in CFerrySys.getxattr(p, attr, buffer, size) })
                }
            }.get()
        }
        return (Int(n), size == 0 ? [] : Array(value[0..<Int(n)]))
    }

    /// listxattr(2); `size` 0 asks for the list's size.
    public static func listxattr(_ fd: Int32, size: Int) throws(Errno) -> (size: Int, names: [UInt8]) {
        var value = [UInt8](repeating: 0, count: size)
        let n = try value.withUnsafeMutableBytes { raw in
            let buffer = size == 0 ? nil : raw.baseAddress?.assumingMemoryBound(to: CChar.self)
            return Result { () throws(Errno) in
                try xattrCall(fd, at: { dir, link in ferry_listxattrat(dir, link, buffer, size) },
                              path: { p in CFerrySys.listxattr(p, buffer, size) })
            }
        }.get()
        return (Int(n), size == 0 ? [] : Array(value[0..<Int(n)]))
    }

    /// setxattr(2).
    public static func setxattr(_ fd: Int32, _ name: CName, value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        _ = try name.withCString { (attr) throws(Errno) in
            try xattrCall(fd, at: { dir, link in ferry_setxattrat(dir, link, attr, value.baseAddress, value.count, flags) },
                          path: { p in CFerrySys.setxattr(p, attr, value.baseAddress, value.count, flags) })
        }
    }

    /// removexattr(2).
    public static func removexattr(_ fd: Int32, _ name: CName) throws(Errno) {
        _ = try name.withCString { (attr) throws(Errno) in
            try xattrCall(fd, at: { dir, link in ferry_removexattrat(dir, link, attr) },
                          path: { p in CFerrySys.removexattr(p, attr) })
        }
    }
}
