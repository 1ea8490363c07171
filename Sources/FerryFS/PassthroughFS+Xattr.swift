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

    /// Refuses a name longer than XATTR_NAME_MAX with ERANGE, as the host's VFS would.
    private func checkXattrName(_ name: [UInt8], _ operation: String) throws(Errno) {
        guard name.count > ResourceLimits.xattrNameMax else { return }
        oversizedRequests.warn { suppressed in
            "\(operation) with a \(name.count)-byte name (more than \(ResourceLimits.xattrNameMax)); answering ERANGE"
                + (suppressed > 0 ? " (\(suppressed) more oversized requests since the last warning)" : "")
        }
        throw Errno.range
    }

    /// GETXATTR: with `size` 0 only the value's size is returned. The client's `size` is a
    /// buffer size, not trusted: no value is longer than XATTR_SIZE_MAX, so no more is allocated.
    public func getxattr(_ ctx: ThreadCredentials, nodeID: UInt64, name: [UInt8], size: UInt32) throws(Errno) -> (size: Int, value: [UInt8]) {
        try checkXattrName(name, "GETXATTR")
        let room = min(Int(size), ResourceLimits.xattrValueMax)
        return try withXattrTarget(ctx, nodeID) { (fd) throws(Errno) in try Host.getxattr(fd, CName(name), size: room) }
    }

    /// LISTXATTR: with `size` 0 only the list's size is returned; at most XATTR_LIST_MAX bytes
    /// are allocated whatever the client asks for.
    public func listxattr(_ ctx: ThreadCredentials, nodeID: UInt64, size: UInt32) throws(Errno) -> (size: Int, names: [UInt8]) {
        let room = min(Int(size), ResourceLimits.xattrListMax)
        return try withXattrTarget(ctx, nodeID) { (fd) throws(Errno) in try Host.listxattr(fd, size: room) }
    }

    /// SETXATTR. A value longer than XATTR_SIZE_MAX is refused with E2BIG (the client's kernel
    /// never sends one; a raw client might), a name longer than XATTR_NAME_MAX with ERANGE.
    public func setxattr(_ ctx: ThreadCredentials, nodeID: UInt64, name: [UInt8], value: UnsafeRawBufferPointer,
                         flags: UInt32) throws(Errno) {
        try checkWritable()
        try checkXattrName(name, "SETXATTR")
        guard value.count <= ResourceLimits.xattrValueMax else {
            oversizedRequests.warn { suppressed in
                "SETXATTR value of \(value.count) bytes (more than \(ResourceLimits.xattrValueMax)); answering E2BIG"
                    + (suppressed > 0 ? " (\(suppressed) more oversized requests since the last warning)" : "")
            }
            throw Errno(rawValue: E2BIG)
        }
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
