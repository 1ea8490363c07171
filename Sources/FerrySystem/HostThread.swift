import CFerrySys
import Glibc

/// A plain OS thread (not a Swift concurrency task), for work that blocks in syscalls such as
/// a FUSE reader waiting in read(2).
public struct HostThread: @unchecked Sendable {
    private let handle: pthread_t

    private final class Box {
        let name: String
        let body: () -> Void
        init(_ name: String, _ body: @escaping () -> Void) { self.name = name; self.body = body }
    }

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept); `stackSize` 0
    /// keeps the default (8 MiB of address space).
    public static func spawn(name: String, stackSize: Int = 0, _ body: @escaping @Sendable () -> Void) throws(Errno) -> HostThread {
        let box = Unmanaged.passRetained(Box(String(name.prefix(15)), body)).toOpaque()
        var thread = pthread_t()
        let rc = ferry_thread_create(&thread, stackSize, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            // Named by itself (prctl): naming another thread writes /proc/self/task/TID/comm,
            // a path that inside the sandbox would resolve in SOURCE.
            _ = ferry_set_thread_name(pthread_self(), box.name)
            box.body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw Errno(rawValue: rc)
        }
        return HostThread(handle: thread)
    }

    /// Lets the thread's resources go when it ends, without a join.
    public func detach() { pthread_detach(handle) }

    /// The calling thread's kernel thread id.
    public static var currentID: Int32 { ferry_gettid() }

    /// Sends `signal` to the thread with kernel id `tid` in this process; harmless once it has
    /// exited (ESRCH), unlike pthread_kill on a finished detached thread.
    public static func signal(threadID tid: Int32, _ signal: Int32) { _ = ferry_tgkill(tid, signal) }

    /// Keeps the calling thread on CPU `cpu` (sched_setaffinity).
    public static func pinCurrent(toCPU cpu: Int) throws(Errno) {
        _ = try checked { ferry_pin_to_cpu(Int32(cpu)) }
    }

    /// CPUs the kernel may ever bring online (possible CPUs, numbered 0..<count).
    public static let configuredCPUs: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_CONF))))

    /// Waits for the thread to finish.
    public func join() { pthread_join(handle, nil) }

    /// Sends `signal` to the thread (e.g. to break it out of a blocking syscall).
    public func signal(_ signal: Int32) { pthread_kill(handle, signal) }
}
