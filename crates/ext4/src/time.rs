//! Timestamps with the exact rounding of Go's `time` and of the reference.
//!
//! The reference stores `seconds | nanoseconds << 34` and clamps seconds to
//! ext4's 34-bit range; a Go zero time (never set) is stored as 0. Parent
//! directories that the archive omits copy their times through a decode and
//! re-encode, so both directions are modelled bit for bit.

/// A Go `time.Time` reduced to what matters here: Unix seconds and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoTime {
    sec: i64,
    nsec: i64,
}

/// Seconds of Go's zero time (January 1, year 1) relative to the Unix epoch.
const GO_ZERO_UNIX: i64 = -62_135_596_800;

impl Default for GoTime {
    fn default() -> Self {
        GoTime::ZERO
    }
}

/// An encoded ext4 timestamp: the low 32 bits go in the classic field, the
/// high 32 bits (epoch bits and nanoseconds) in the `_extra` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FsTime(pub(crate) u64);

impl GoTime {
    /// Go's zero `time.Time`.
    pub(crate) const ZERO: GoTime = GoTime {
        sec: GO_ZERO_UNIX,
        nsec: 0,
    };

    /// `time.Unix(sec, nsec)`, normalising nanoseconds into `[0, 1e9)`.
    pub(crate) fn unix(mut sec: i64, mut nsec: i64) -> GoTime {
        if !(0..1_000_000_000).contains(&nsec) {
            let n = nsec / 1_000_000_000;
            sec = sec.wrapping_add(n);
            nsec -= n * 1_000_000_000;
            if nsec < 0 {
                nsec += 1_000_000_000;
                sec = sec.wrapping_sub(1);
            }
        }
        GoTime { sec, nsec }
    }

    pub(crate) fn is_zero(self) -> bool {
        self == GoTime::ZERO
    }

    pub(crate) fn to_fs(self) -> FsTime {
        if self.is_zero() {
            return FsTime(0);
        }
        if self.sec < -0x8000_0000 {
            return FsTime(0x8000_0000);
        }
        if self.sec > 0x3_7fff_ffff {
            return FsTime(0x3_7fff_ffff);
        }
        FsTime((self.sec as u64) | ((self.nsec as u64) << 34))
    }

    pub(crate) fn from_fs(t: FsTime) -> GoTime {
        let t = t.0;
        if t == 0 {
            return GoTime::ZERO;
        }
        let mut s = (t & 0x3_ffff_ffff) as i64;
        if s > 0x7fff_ffff && s < 0x1_0000_0000 {
            s = i64::from(s as u32 as i32);
        }
        GoTime::unix(s, (t >> 34) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_reference() {
        let cases: &[(GoTime, u64)] = &[
            (GoTime::ZERO, 0),
            (GoTime::unix(0, 0), 0),
            (GoTime::unix(1_700_000_000, 0), 1_700_000_000),
            (GoTime::unix(1, 5), 1 | 5 << 34),
            // Past 2038: the 34-bit range holds it.
            (GoTime::unix(4_102_444_800, 0), 4_102_444_800),
            (GoTime::unix(-1, 0), u64::MAX),
            (GoTime::unix(-0x8000_0001, 0), 0x8000_0000),
            (GoTime::unix(0x3_8000_0000, 7), 0x3_7fff_ffff),
        ];
        for (t, want) in cases {
            assert_eq!(t.to_fs(), FsTime(*want), "{t:?}");
        }
    }

    #[test]
    fn normalises_like_go() {
        assert_eq!(
            GoTime::unix(-1, -500_000_000),
            GoTime::unix(-2, 500_000_000)
        );
        assert_eq!(GoTime::unix(0, 1_500_000_000), GoTime::unix(1, 500_000_000));
    }

    #[test]
    fn parent_times_pass_through_the_references_decoder() {
        let t = GoTime::unix(1_700_000_000, 123);
        assert_eq!(GoTime::from_fs(t.to_fs()).to_fs(), t.to_fs());
        // The reference's decoder reads seconds between 2038 and 2106 as
        // negative, so a synthesised parent of a 2100 directory lands in 1963.
        let late = GoTime::unix(4_102_444_800, 9);
        assert_eq!(
            GoTime::from_fs(late.to_fs()).to_fs(),
            FsTime((4_102_444_800i64 - (1 << 32)) as u64)
        );
    }
}
