//! The ALSA backend's decisions: channel count, what to do about a failed read, and what to
//! tell the user when a device cannot be opened.

use rustix::io::Errno;

/// What to do after a read failed with an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Interrupted by a signal, or not ready: read again.
    Retry,
    /// Overrun (`EPIPE`: the buffer filled because reads were late) or a stream in a bad
    /// state (`EBADFD`): prepare the stream and read on; the lost audio is a gap.
    Prepare,
    /// The system was suspended (`ESTRPIPE`): resume the stream, or prepare it if the
    /// driver cannot resume.
    Resume,
    /// The device is gone (USB microphone unplugged): reopen it.
    Gone,
    /// Anything else (`EIO`: the driver timed out, DMA or interrupt trouble): report it.
    Fail,
}

/// What to do about a read that failed with `errno` (positive, as `alsa::Error::errno`).
pub fn recovery_for(errno: i32) -> Recovery {
    match Errno::from_raw_os_error(errno) {
        Errno::INTR | Errno::AGAIN => Recovery::Retry,
        Errno::PIPE | Errno::BADFD => Recovery::Prepare,
        Errno::STRPIPE => Recovery::Resume,
        Errno::NODEV | Errno::NXIO => Recovery::Gone,
        _ => Recovery::Fail,
    }
}

/// What to do after `snd_pcm_resume` answered `result` (`Ok` or the errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterResume {
    /// Resumed: read on.
    Done,
    /// The hardware is still waking up: wait a little and try again.
    Wait,
    /// The driver cannot resume: prepare the stream instead.
    Prepare,
}

/// The next step after a resume attempt.
pub fn after_resume(result: Result<(), i32>) -> AfterResume {
    match result {
        Ok(()) => AfterResume::Done,
        Err(errno) if Errno::from_raw_os_error(errno) == Errno::AGAIN => AfterResume::Wait,
        Err(_) => AfterResume::Prepare,
    }
}

/// The channel count to open: `wanted` if given (1 or 2), else mono if the device can,
/// else stereo. `supports(n)` says whether the device can capture `n` channels.
pub fn choose_channels(wanted: Option<u16>, supports: impl Fn(u16) -> bool) -> Result<u16, String> {
    match wanted {
        Some(n @ (1 | 2)) if supports(n) => Ok(n),
        Some(n @ (1 | 2)) => Err(format!(
            "cannot capture {n} channel{}; a plughw: device converts",
            if n == 1 { "" } else { "s" }
        )),
        Some(n) => Err(format!("{n} channels asked for; only 1 or 2 are supported")),
        None if supports(1) => Ok(1),
        None if supports(2) => Ok(2),
        None => Err("captures neither mono nor stereo; a plughw: device converts".to_string()),
    }
}

/// A hint for an `errno` from opening or configuring a device.
pub fn open_hint(errno: i32) -> Option<&'static str> {
    match Errno::from_raw_os_error(errno) {
        Errno::NOENT | Errno::NODEV | Errno::NXIO => {
            Some("no such capture device; `arecord -l` lists cards, `arecord -L` names")
        }
        Errno::BUSY => Some("another program is using the device"),
        Errno::ACCESS | Errno::PERM => Some("permission denied (is the user in the audio group?)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_errors_map_to_recoveries() {
        let cases = [
            (Errno::PIPE, Recovery::Prepare),
            (Errno::STRPIPE, Recovery::Resume),
            (Errno::BADFD, Recovery::Prepare),
            (Errno::INTR, Recovery::Retry),
            (Errno::AGAIN, Recovery::Retry),
            (Errno::NODEV, Recovery::Gone),
            (Errno::IO, Recovery::Fail),
            (Errno::INVAL, Recovery::Fail),
        ];
        for (errno, recovery) in cases {
            assert_eq!(recovery_for(errno.raw_os_error()), recovery, "{errno:?}");
        }
    }

    #[test]
    fn resume_waits_while_the_hardware_wakes_then_falls_back_to_prepare() {
        assert_eq!(after_resume(Ok(())), AfterResume::Done);
        assert_eq!(
            after_resume(Err(Errno::AGAIN.raw_os_error())),
            AfterResume::Wait
        );
        assert_eq!(
            after_resume(Err(Errno::NOSYS.raw_os_error())),
            AfterResume::Prepare
        );
        assert_eq!(
            after_resume(Err(Errno::IO.raw_os_error())),
            AfterResume::Prepare
        );
    }

    #[test]
    fn mono_is_preferred_and_stereo_accepted() {
        let both = |n: u16| n == 1 || n == 2;
        let stereo_only = |n: u16| n == 2;
        let four_only = |n: u16| n == 4;
        assert_eq!(choose_channels(None, both), Ok(1));
        assert_eq!(choose_channels(None, stereo_only), Ok(2));
        assert!(choose_channels(None, four_only).is_err());
        assert_eq!(choose_channels(Some(2), both), Ok(2));
        assert_eq!(choose_channels(Some(1), both), Ok(1));
        let error = choose_channels(Some(1), stereo_only).unwrap_err();
        assert!(error.contains("cannot capture 1 channel;"), "{error}");
        assert!(choose_channels(Some(4), four_only).is_err());
        assert!(choose_channels(Some(0), both).is_err());
    }

    #[test]
    fn open_errors_get_hints() {
        assert!(open_hint(Errno::NOENT.raw_os_error()).is_some_and(|h| h.contains("arecord")));
        assert!(open_hint(Errno::BUSY.raw_os_error()).is_some_and(|h| h.contains("another")));
        assert_eq!(open_hint(Errno::IO.raw_os_error()), None);
    }
}
