import Glibc

/// A file descriptor that this process owns and closes when the last reference goes away.
/// Sharing the object (not the number) keeps the descriptor alive while any thread uses it.
public final class OwnedFD: Sendable {
    /// The descriptor number.
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    deinit { _ = Glibc.close(rawValue) }
}
