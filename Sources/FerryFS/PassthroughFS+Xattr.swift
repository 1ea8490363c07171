import FerrySystem
import Glibc

/// Extended attributes, symlinks' own included (the host decides what a symlink may carry:
/// trusted.* and security.* yes, user.* no, as on the host).
extension PassthroughFS {
    private func withXattrTarget<R>(_ ctx: ThreadCredentials, _ nodeID: UInt64,
                                    _ body: (Int32) throws(Errno) -> R) throws(Errno) -> R {
        guard options.xattr else { throw Errno.noSys }
        return try withNode(nodeID, ctx) { (_, fd) throws(Errno) in try body(fd) }
    }

    /// GETXATTR: with `size` 0 only the value's size is returned.
    public func getxattr(_ ctx: ThreadCredentials, nodeID: UInt64, name: [UInt8], size: UInt32) throws(Errno) -> (size: Int, value: [UInt8]) {
        try withXattrTarget(ctx, nodeID) { (fd) throws(Errno) in try Host.getxattr(fd, CName(name), size: Int(size)) }
    }

    /// LISTXATTR: with `size` 0 only the list's size is returned.
    public func listxattr(_ ctx: ThreadCredentials, nodeID: UInt64, size: UInt32) throws(Errno) -> (size: Int, names: [UInt8]) {
        try withXattrTarget(ctx, nodeID) { (fd) throws(Errno) in try Host.listxattr(fd, size: Int(size)) }
    }

    /// SETXATTR.
    public func setxattr(_ ctx: ThreadCredentials, nodeID: UInt64, name: [UInt8], value: UnsafeRawBufferPointer,
                         flags: UInt32) throws(Errno) {
        try checkWritable()
        try withXattrTarget(ctx, nodeID) { (fd) throws(Errno) in
            try Host.setxattr(fd, CName(name), value: value, flags: Int32(bitPattern: flags))
        }
    }

    /// REMOVEXATTR.
    public func removexattr(_ ctx: ThreadCredentials, nodeID: UInt64, name: [UInt8]) throws(Errno) {
        try checkWritable()
        try withXattrTarget(ctx, nodeID) { (fd) throws(Errno) in try Host.removexattr(fd, CName(name)) }
    }
}
