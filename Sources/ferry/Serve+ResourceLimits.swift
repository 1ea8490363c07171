import ArgumentParser
import FerryFS
import FerrySystem
import Glibc
import Logging

/// `--max-inodes`, `--max-open-files`, `--max-lock-waiters` and `--rlimit-nofile`: the bounds on
/// what one client connection may make Ferry hold (`ResourceLimits`), for both transports.
extension Serve {
    /// The most `--max-lock-waiters` may be: each waiter is a thread.
    static let lockWaitersCeiling = 65_536

    /// Each bound is at least 1; `--rlimit-nofile` is 0 (unchanged) or at least 64.
    func validateResourceLimits() throws {
        for (value, name) in [(maxInodes, "--max-inodes"), (maxOpenFiles, "--max-open-files")] {
            if let value, value < 1 { throw ValidationError("\(name) must be at least 1") }
        }
        if let waiters = maxLockWaiters, waiters < 1 || waiters > Serve.lockWaitersCeiling {
            throw ValidationError("--max-lock-waiters must be between 1 and \(Serve.lockWaitersCeiling)")
        }
        if let nofile = rlimitNofile, nofile != 0 && (nofile < 64 || nofile > DescriptorLimit.kernelMaximum()) {
            throw ValidationError("--rlimit-nofile must be 0 (leave it) or between 64 and fs.nr_open (\(DescriptorLimit.kernelMaximum()))")
        }
    }

    /// Sets RLIMIT_NOFILE before anything sizes itself by it (the kept-descriptor cache, the
    /// default bounds): `--rlimit-nofile N` exactly, 0 unchanged, else raised as far as allowed.
    func applyDescriptorLimit(logger: Logger) throws {
        switch rlimitNofile {
        case 0?:
            logger.info("descriptor limit left at \(DescriptorLimit.current) (--rlimit-nofile 0)")
        case let count?:
            do { try DescriptorLimit.set(count) } catch {
                throw StartupError("--rlimit-nofile \(count): cannot set RLIMIT_NOFILE: \(error)")
            }
            logger.info("descriptor limit set to \(count) (--rlimit-nofile)")
        case nil:
            let (before, after) = DescriptorLimit.raise()
            if after != before { logger.info("descriptor limit raised from \(before) to \(after)") }
        }
    }

    /// Whether each inode will keep an O_PATH descriptor (no file handles, or no right to
    /// reopen them), so that inodes count against the descriptor limit.
    var inodesUseDescriptors: Bool { inodeFileHandles == .never || geteuid() != 0 }

    /// The bounds to serve with: the options given, the rest from `ResourceLimits.defaults` for
    /// the descriptor limit in force. Logs them, and warns when the descriptors they allow
    /// exceed RLIMIT_NOFILE (the host then answers EMFILE before the bound is reached).
    func resourceLimits(logger: Logger) -> ResourceLimits {
        let limits = chosenResourceLimits(descriptorLimit: DescriptorLimit.current)
        logger.info("resource bounds per connection: \(limits.maxInodes) inodes, \(limits.maxOpenFiles) open files, \(limits.maxLockWaiters) blocked lock requests")
        let needed = limits.descriptorsNeeded(inodesUseDescriptors: inodesUseDescriptors)
        let available = DescriptorLimit.current
        if needed > available {
            logger.warning("these bounds may need \(needed) descriptors but RLIMIT_NOFILE is \(available): the host may answer EMFILE before a bound is reached (lower --max-open-files\(inodesUseDescriptors ? " or --max-inodes" : ""), or raise --rlimit-nofile)")
        }
        return limits
    }

    /// The options given over the defaults for the descriptor limit `descriptorLimit`.
    func chosenResourceLimits(descriptorLimit: Int) -> ResourceLimits {
        var limits = ResourceLimits.defaults(descriptorLimit: descriptorLimit, inodesUseDescriptors: inodesUseDescriptors)
        if let maxInodes { limits.maxInodes = maxInodes }
        if let maxOpenFiles { limits.maxOpenFiles = maxOpenFiles }
        if let maxLockWaiters { limits.maxLockWaiters = maxLockWaiters }
        return limits
    }

    /// `--explain`'s line on the bounds (with the descriptor limit they would be sized by: this
    /// process raises its own limit as the server would, to learn how far it gets).
    func explainResourceLimits() -> String {
        let limit: Int
        switch rlimitNofile {
        case 0?: limit = DescriptorLimit.current
        case let count?: limit = count
        case nil: limit = DescriptorLimit.raise().after
        }
        let limits = chosenResourceLimits(descriptorLimit: limit)
        return "resource bounds per connection (descriptor limit \(limit)): \(limits.maxInodes) inodes (then ENOMEM), \(limits.maxOpenFiles) open files (then ENFILE), \(limits.maxLockWaiters) blocked lock requests (then ENOLCK)"
    }
}
