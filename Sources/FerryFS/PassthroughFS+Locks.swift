import FerrySystem
import Glibc

/// Locks: GETLK, SETLK, SETLKW (POSIX and flock), and the lock side of FLUSH.
extension PassthroughFS {
    /// F_GETLK for `owner` through open file `fh`.
    public func getlk(_ ctx: ThreadCredentials, nodeID: UInt64, fh: UInt64, owner: UInt64,
                      lock: LockRange) throws(Errno) -> (LockRange, pid: UInt32) {
        let file = try openFiles.get(fh)
        let inode = try inodes.get(nodeID)
        return try locks.getlk(nodeID: nodeID, owner: owner, file: file, type: inode.type, lock: lock, credentials: ctx)
    }

    /// F_SETLK / F_SETLKW (POSIX) or flock (`flock` true) through open file `fh`.
    public func setlk(_ ctx: ThreadCredentials, nodeID: UInt64, fh: UInt64, owner: UInt64, pid: UInt32,
                      lock: LockRange, flock: Bool, blocking: Bool, unique: UInt64,
                      completion: @escaping @Sendable (Errno?) -> Void) -> LockManager.Outcome {
        let file: OpenFileTable.OpenFile, inode: Inode
        do {
            file = try openFiles.get(fh)
            inode = try inodes.get(nodeID)
        } catch {
            return .done(error)
        }
        if flock {
            return locks.flock(file: file, type: lock.type, blocking: blocking, unique: unique, owner: owner,
                               nodeID: nodeID, completion: completion)
        }
        return locks.setlk(nodeID: nodeID, owner: owner, pid: pid, file: file, type: inode.type, lock: lock,
                           blocking: blocking, unique: unique, credentials: ctx, completion: completion)
    }
}
