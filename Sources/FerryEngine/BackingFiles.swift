import FerrySystem
import Glibc
import Logging
import Synchronization

/// FUSE passthrough bookkeeping: which inodes the kernel reads and writes directly on the host
/// file (FOPEN_PASSTHROUGH with a backing id), and which it sends to Ferry.
///
/// The kernel puts each inode in one I/O mode while any file of it is open: every open of an
/// inode in passthrough mode must name the same backing id, and a cached (non-passthrough) open
/// of such an inode fails, as does a passthrough open of an inode with cached opens (EIO in the
/// caller). So the mode is decided per node by its first open and kept, with a count of its
/// open files, until the last of them is released; then the backing id is closed
/// (FUSE_DEV_IOC_BACKING_CLOSE). protocol/fuse-abi.md, "FUSE passthrough".
final class BackingFiles: Sendable {
    /// How the open files of one node do their I/O.
    private enum Mode {
        /// `quiet`: the host watcher was told to ignore the node's CLOSE_WRITE events.
        case passthrough(id: Int32, files: Int, quiet: Bool)
        case cached(files: Int)
    }

    private struct State {
        var nodes: [UInt64: Mode] = [:]
        /// Each counted open file (fh) and its node.
        var files: [UInt64: UInt64] = [:]
    }

    private let state = Mutex(State())
    /// The /dev/fuse descriptor the ioctls go to (-1 until the transport attaches it).
    private let device = Atomic<Int32>(-1)
    /// Errnos of refused BACKING_OPENs already logged (each is logged once).
    private let loggedFailures = Mutex<Set<Int32>>([])
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// Sets the /dev/fuse descriptor of the connection (any clone of it would do).
    func attach(device fd: Int32) { device.store(fd, ordering: .releasing) }

    /// Counts open file `fh` of `nodeID` (host descriptor `fd`) and returns the backing id to
    /// answer it with, or nil for an open the kernel sends to Ferry. `eligible` says whether
    /// the file may be passed through at all (a regular file without set-id bits); it is asked
    /// only for a node with no open file yet. `register` makes the BACKING_OPEN call (with Ferry's
    /// own credentials, which the kernel keeps for the I/O).
    /// `writable`: the file is open for writing; the first such open of a passed-through node
    /// returns `quiet` true, and the caller then has the host watcher ignore the node's
    /// CLOSE_WRITE events (the kernel's backing files report the client's closes as host
    /// changes) until `released` says the node's last file is gone.
    func opened(fh: UInt64, nodeID: UInt64, writable: Bool = false, eligible: () -> Bool,
                register: (_ device: Int32) throws(Errno) -> Int32) -> (id: Int32, quiet: Bool)? {
        let device = device.load(ordering: .acquiring)
        return state.withLock { state -> (id: Int32, quiet: Bool)? in
            state.files[fh] = nodeID
            switch state.nodes[nodeID] {
            case let .passthrough(id, files, quiet)?:
                state.nodes[nodeID] = .passthrough(id: id, files: files + 1, quiet: quiet || writable)
                return (id, writable && !quiet)
            case let .cached(files)?:
                state.nodes[nodeID] = .cached(files: files + 1)
                return nil
            case nil:
                guard device >= 0, eligible() else {
                    state.nodes[nodeID] = .cached(files: 1)
                    return nil
                }
                do throws(Errno) {
                    let id = try register(device)
                    state.nodes[nodeID] = .passthrough(id: id, files: 1, quiet: writable)
                    return (id, writable)
                } catch {
                    logRefusal(error)
                    state.nodes[nodeID] = .cached(files: 1)
                    return nil
                }
            }
        }
    }

    /// Uncounts open file `fh` (RELEASE); closes its node's backing id after the last one.
    /// Returns the node whose CLOSE_WRITE events the host watcher ignored until now, if this
    /// was its last file.
    @discardableResult
    func released(fh: UInt64) -> UInt64? {
        let device = device.load(ordering: .acquiring)
        let closing = state.withLock { state -> (id: Int32, quietNode: UInt64?)? in
            guard let nodeID = state.files.removeValue(forKey: fh) else { return nil }
            switch state.nodes[nodeID] {
            case let .passthrough(id, files, quiet)?:
                if files > 1 { state.nodes[nodeID] = .passthrough(id: id, files: files - 1, quiet: quiet); return nil }
                state.nodes[nodeID] = nil
                return (id, quiet ? nodeID : nil)
            case let .cached(files)?:
                state.nodes[nodeID] = files > 1 ? .cached(files: files - 1) : nil
                return nil
            case nil:
                return nil
            }
        }
        guard let closing else { return nil }
        do throws(Errno) {
            try FUSEBackingDevice.close(device: device, id: closing.id)
        } catch {
            logger.warning("FUSE_DEV_IOC_BACKING_CLOSE of backing id \(closing.id) failed: \(error)")
        }
        return closing.quietNode
    }

    /// Backing ids registered now (for tests and the exit log).
    var openBackingIDs: Int {
        state.withLock { $0.nodes.values.reduce(0) { count, mode in if case .passthrough = mode { return count + 1 }; return count } }
    }

    private func logRefusal(_ error: Errno) {
        guard loggedFailures.withLock({ $0.insert(error.rawValue).inserted }) else { return }
        let why = error.rawValue == ELOOP
            ? " (the host file lies on a stacked file system, such as overlayfs or another FUSE passthrough mount)"
            : ""
        logger.warning("the kernel refused a passthrough backing file: FUSE_DEV_IOC_BACKING_OPEN: \(error)\(why); such files are served through Ferry (logged once per error)")
    }
}
