import Synchronization

/// A value behind its own lock, as a class so that many of them can sit in an array (one
/// lock per shard of a table). `Mutex` itself cannot be copied into an array.
final class Locked<Value>: @unchecked Sendable {
    private let mutex: Mutex<Value>

    init(_ value: sending Value) { mutex = Mutex(value) }

    /// Runs `body` with exclusive access to the value.
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        mutex.withLock { value -> UnsafeTransfer<R> in UnsafeTransfer(body(&value)) }.value
    }
}

/// Carries a non-Sendable result out of a `Mutex` closure; the lock already serialises access.
private struct UnsafeTransfer<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
