import CFerrySys
import Glibc

/// Host calls that move or describe file data.
extension Host {
    /// pread(2) into `buffer`; returns the bytes read.
    public static func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64) throws(Errno) -> Int {
        try retrying { Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// pwrite(2) of all of `data` (loops over short writes); returns the bytes written.
    public static func pwrite(_ fd: Int32, _ data: UnsafeRawBufferPointer, offset: Int64) throws(Errno) -> Int {
        var done = 0
        while done < data.count {
            let n = try retrying { Glibc.pwrite(fd, data.baseAddress! + done, data.count - done, off_t(offset) + off_t(done)) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// preadv(2) into the `count` buffers at `vectors`; returns the bytes read (one call, so
    /// fewer than asked at the end of the file).
    public static func preadv(_ fd: Int32, _ vectors: UnsafePointer<iovec>, count: Int, offset: Int64) throws(Errno) -> Int {
        try retrying { Glibc.preadv(fd, vectors, Int32(count), off_t(offset)) }
    }

    /// pwritev(2) of the `count` buffers at `vectors`; returns the bytes written by this one
    /// call (the caller continues a short write).
    public static func pwritev(_ fd: Int32, _ vectors: UnsafePointer<iovec>, count: Int, offset: Int64) throws(Errno) -> Int {
        try retrying { Glibc.pwritev(fd, vectors, Int32(count), off_t(offset)) }
    }

    /// fsync(2) or fdatasync(2).
    public static func fsync(_ fd: Int32, dataOnly: Bool) throws(Errno) {
        _ = try retrying { dataOnly ? fdatasync(fd) : Glibc.fsync(fd) }
    }

    /// fallocate(2) with any mode the host file system accepts.
    public static func fallocate(_ fd: Int32, mode: Int32, offset: Int64, length: Int64) throws(Errno) {
        _ = try retrying { ferry_fallocate(fd, mode, offset, length) }
    }

    /// lseek(2), including SEEK_DATA / SEEK_HOLE.
    public static func lseek(_ fd: Int32, offset: Int64, whence: Int32) throws(Errno) -> Int64 {
        Int64(try checked { Glibc.lseek(fd, off_t(offset), whence) })
    }

    /// copy_file_range(2) with explicit offsets; returns the bytes copied.
    public static func copyFileRange(from input: Int32, at inputOffset: Int64, to output: Int32, at outputOffset: Int64,
                                     length: Int, flags: UInt32) throws(Errno) -> Int {
        var inOff = inputOffset, outOff = outputOffset
        return try retrying { ferry_copy_file_range(input, &inOff, output, &outOff, length, flags) }
    }

    /// close(dup(fd)): what a local close does to a shared open file (flushes NFS-style state).
    public static func flushByDuplicate(_ fd: Int32) throws(Errno) {
        let copy = try checked { dup(fd) }
        _ = Glibc.close(copy)
    }

    /// An ioctl whose argument is a 32-bit integer read or written through a pointer.
    public static func ioctl(_ fd: Int32, request: UInt, value: inout Int32) throws(Errno) {
        _ = try retrying { ferry_ioctl_ptr(fd, request, &value) }
    }

    /// An ioctl whose argument is a buffer of `bytes` read and written in place.
    public static func ioctl(_ fd: Int32, request: UInt, bytes: inout [UInt8]) throws(Errno) {
        _ = try retrying { bytes.withUnsafeMutableBytes { raw in ferry_ioctl_ptr(fd, request, raw.baseAddress) } }
    }
}
