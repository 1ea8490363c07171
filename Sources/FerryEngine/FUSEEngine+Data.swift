import FerryFS
import FerryIO
import FerryProtocol
import FerrySystem
import Glibc

/// READ, WRITE, FSYNC, FSYNCDIR and FALLOCATE through the I/O core: the filesystem names the
/// open file, the worker's I/O engine moves the data, and the reply is sent when the operation
/// completes (`completeData`), not when the request is handled. The request's slot keeps its
/// buffers and its open file until then.
extension FUSEEngine {
    /// Starts a data request on the worker's I/O engine; the reply follows from `completeData`.
    func submitData(_ request: Request, worker: Worker) throws(Errno) -> Outcome {
        let data = worker.data
        let operation: IOOperation
        let file: OpenFileTable.OpenFile
        switch request.operation {
        case let .read(io):
            file = try fs.openFile(io.fh)
            let slot = data.current
            slot.bounced = false
            if slot.vectorPayload {
                slot.vectors.truncate(to: Int(io.size))
                if !file.direct || slot.vectors.vectors.isAligned(to: FUSEEngine.directAlignment) {
                    operation = .readv(fd: file.fd.rawValue, offset: try hostOffset(io.offset), vectors: slot.vectors.vectors)
                    break
                }
                slot.bounced = true   // read into the aligned reply buffer; `encodeDataReply` copies it over
            }
            let limit = min(slot.vectorPayload ? slot.vectors.totalLength : Int(io.size), Int(options.maxWrite))
            let payload = UnsafeMutableRawBufferPointer(rebasing: slot.reply.mutableBytes[FUSEABI.readPayloadOffset...].prefix(limit))
            operation = .read(fd: file.fd.rawValue, offset: try hostOffset(io.offset), buffer: payload)
        case let .write(io, bytes):
            file = try fs.writableFile(io.fh)
            let slot = data.current
            let pageCache = io.ioFlags & RequestFlags.writeCache != 0
            let fd = file.descriptor(forPageCacheWrite: pageCache)
            let cached = !file.direct || fd != file.fd.rawValue
            let offset = try hostOffset(io.offset)
            if slot.vectorPayload {
                let vectors = slot.vectors.vectors
                if cached || vectors.isAligned(to: FUSEEngine.directAlignment) {
                    operation = .writev(fd: fd, offset: offset, vectors: vectors, cached: cached)
                    break
                }
                // An O_DIRECT host file and buffers it cannot take: the data goes through the
                // slot's request buffer, where it starts on a page boundary.
                let room = slot.request.mutableBytes[FUSEABI.writePayloadOffset...]
                guard vectors.totalLength <= room.count else {
                    logger.error("#\(request.header.unique) WRITE of \(vectors.totalLength) bytes to an O_DIRECT file from unaligned guest buffers exceeds the \(room.count)-byte bounce buffer; answering EINVAL")
                    throw Errno.invalid
                }
                let copied = vectors.copy(into: UnsafeMutableRawBufferPointer(rebasing: room))
                operation = .write(fd: fd, offset: offset, data: UnsafeRawBufferPointer(rebasing: room.prefix(copied)),
                                   cached: cached)
                break
            }
            operation = .write(fd: fd, offset: offset,
                               data: bytes.withUnsafeBytes { $0 },   // lives in the slot's request buffer
                               cached: cached)
        case let .fsync(fh, flags), let .fsyncdir(fh, flags):
            file = try fs.openFile(fh)
            operation = .fsync(fd: file.fd.rawValue, dataOnly: flags & RequestFlags.fsyncDataOnly != 0)
        case let .fallocate(fh, offset, length, mode):
            file = try fs.writableFile(fh)
            guard length <= UInt64(Int64.max) else { throw Errno.invalid }
            operation = .fallocate(fd: file.fd.rawValue, mode: Int32(bitPattern: mode), offset: try hostOffset(offset),
                                   length: Int64(length))
        default:
            preconditionFailure("not a data request")
        }
        let slot = data.take()
        slot.unique = request.header.unique
        slot.opcode = Opcode(rawValue: request.header.opcode) ?? .read
        slot.file = file
        // Queued: it starts with the thread's next io_uring_enter (often the one that waits for
        // it), under the caller's credentials still (`ThreadCredentials.willChange` flushes
        // first if they change), which a WRITE or FALLOCATE needs: the host clears set-id bits
        // by the submitter's credentials.
        data.io.submit(operation, slot: slot.index)
        return .submitted
    }

    /// `makeWorker` for a transport that brings the worker's I/O engine: a FUSE ring queue
    /// whose own io_uring carries the data operations too (`SharedRing.makeEngine`).
    public func makeWorker(io: IOEngine, deferredReplies: @escaping DeferredReplySink = { _ in },
                           notifications: @escaping NotificationSink = { _ in 0 },
                           kick: (@Sendable () -> Void)? = nil) -> Worker {
        let progress = kick.map { ReaderProgress(kick: $0) }
        if let progress { closeOrdering.add(progress) }
        let data = DataSlots(io: io, requestCapacity: options.requestBufferSize, replyCapacity: options.replyBufferSize)
        return Worker(options: options, switchCredentials: switchCredentials, deferredReplies: deferredReplies,
                      notifications: notifications, progress: progress, data: data)
    }

    /// Buffer alignment an O_DIRECT host file gets without a bounce through Ferry's own
    /// page-aligned buffers (the page size: block sizes up to 4 KiB).
    static let directAlignment = 4096

    /// A FUSE offset as a host file offset (io_uring would take 2^64 - 1 as "the file position").
    private func hostOffset(_ offset: UInt64) throws(Errno) -> Int64 {
        guard offset <= UInt64(Int64.max) else { throw Errno.invalid }
        return Int64(offset)
    }

    /// Sends the replies of the worker's data requests that completed, through `send` (false:
    /// the connection is gone). With `wait`, first sleeps until at least one completes (when
    /// every slot is taken and no request can be read). Returns false if a send failed.
    public func completeData(_ worker: Worker, wait: Bool = false, send: (ByteView) -> Bool) -> Bool {
        let data = worker.data
        guard data.inFlight > 0 else { return true }
        var connected = true
        let answer = { [self] (completion: IOCompletion) in
            let slot = data.release(completion.slot)
            let file = slot.file
            slot.file = nil
            let reply = encodeDataReply(slot, result: completion.result)
            if completion.result >= 0, slot.opcode == .write || slot.opcode == .fallocate,
               let file, setIDReports.mayHoldSetID(file.nodeID) {
                invalidateAttributes([file.nodeID], worker: worker)
            }
            if connected { connected = send(reply) }
        }
        data.io.reap(wait: wait, answer)
        return connected
    }

    /// Waits for and answers every data request still in flight (a reader that stops).
    public func drainData(_ worker: Worker, send: (ByteView) -> Bool) {
        var connected = true
        while worker.data.inFlight > 0 {
            let sent = completeData(worker, wait: true) { connected ? send($0) : false }
            connected = connected && sent
        }
    }

    private func encodeDataReply(_ slot: DataSlots.Slot, result: Int32) -> ByteView {
        var writer: WireWriter
        if result < 0 {
            writer = WireWriter(slot.request, offset: 0)
            ReplyFraming.finishError(&writer, unique: slot.unique, errno: -result)
            logData(slot, "\(Errno(rawValue: -result))")
        } else if slot.opcode == .read, slot.vectorPayload {
            // The data is in the transport's buffers already: the reply is the header, with a
            // length that counts it.
            if slot.bounced {
                let bytes = slot.reply.mutableBytes[FUSEABI.readPayloadOffset...].prefix(Int(result))
                slot.vectors.vectors.copy(from: UnsafeRawBufferPointer(rebasing: bytes))
            }
            writer = WireWriter(slot.request, offset: ReplyFraming.bodyOffset)
            ReplyFraming.finishSuccess(&writer, unique: slot.unique)
            writer.patch(UInt32(ReplyFraming.bodyOffset + Int(result)), at: 0)
            logData(slot, "ok, \(result) bytes read into place\(slot.bounced ? " (through the reply buffer)" : "")")
        } else if slot.opcode == .read {
            writer = WireWriter(slot.reply, offset: ReplyFraming.bodyOffset + Int(result))
            ReplyFraming.finishSuccess(&writer, unique: slot.unique)
            logData(slot, "ok, \(result) bytes read")
        } else {
            writer = WireWriter(slot.request, offset: ReplyFraming.bodyOffset)
            if slot.opcode == .write { writer.append(UInt32(result)); writer.append(UInt32(0)) }
            ReplyFraming.finishSuccess(&writer, unique: slot.unique)
            logData(slot, "ok")
        }
        return writer.written
    }

    private func logData(_ slot: DataSlots.Slot, _ result: @autoclosure () -> String) {
        guard logger.logLevel <= .debug else { return }
        logger.debug("#\(slot.unique) \(slot.opcode) -> \(result()) (I/O core)")
    }
}
