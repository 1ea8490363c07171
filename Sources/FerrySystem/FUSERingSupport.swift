import Glibc

/// Whether the kernel offers FUSE-over-io_uring: the fuse module's `enable_uring` parameter
/// (protocol/fuse-uring.md, "Enabling"). Ferry only reads it; turning it on is the admin's call.
public enum FUSERingSupport {
    /// The module parameter.
    public static let parameterPath = "/sys/module/fuse/parameters/enable_uring"

    /// What the kernel says.
    public enum State: Equatable, Sendable {
        /// The parameter is on: INIT will offer FUSE_OVER_IO_URING.
        case enabled
        /// The parameter exists and is off (its value).
        case disabled(String)
        /// No such parameter: the kernel was built without FUSE-over-io_uring (or is older than 6.14).
        case unsupported
    }

    /// Reads the parameter now.
    public static var state: State {
        let fd = Glibc.open(parameterPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .unsupported }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 16)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
        let value = String(decoding: bytes.prefix(max(0, n)), as: UTF8.self).filter { !$0.isWhitespace }
        return value == "Y" || value == "1" ? .enabled : .disabled(value)
    }
}
