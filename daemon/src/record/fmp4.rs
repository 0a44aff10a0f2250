//! Fragmented MP4: the bytes of a recording, built with `mp4-atom`.
//!
//! A recording is an init segment (`ftyp` + `moov`) followed by fragments (`moof` + `mdat`),
//! each holding about a second of the H.264 and Opus the daemon has already encoded. The
//! `moov` describes the tracks but lists no samples; every fragment carries its own sample
//! table. So the file is playable up to the last complete fragment at every moment: a power
//! cut or a full disk loses at most the fragment being written, never the whole recording
//! (a plain MP4 needs its `moov`, with every sample, written at the end). The same segments
//! also suit Media Source Extensions in a browser.
//!
//! This module only produces bytes; deciding when a fragment ends and writing files is the
//! recorder's job.

use mp4_atom::{
    Atom as _, Audio, Avc1, Avcc, Codec, Dinf, Dops, Dref, Encode, Error, FourCC, Ftyp, Hdlr,
    Header, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd,
    Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};

/// The video track: H.264, timescale 90 kHz (RTP's clock).
#[derive(Debug, Clone)]
pub struct VideoTrack {
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// The sequence parameter set: one NAL unit without start code or length prefix.
    pub sps: Vec<u8>,
    /// The picture parameter set: one NAL unit without start code or length prefix.
    pub pps: Vec<u8>,
}

/// The audio track: Opus at 48 kHz.
#[derive(Debug, Clone)]
pub struct AudioTrack {
    /// Output channels: 1 (mono) or 2 (stereo), the two that channel mapping family 0 allows.
    pub channels: u16,
}

/// One sample: for video an access unit as AVCC (each NAL unit preceded by its 4-byte
/// big-endian length), for audio one Opus packet.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's bytes, copied as they are into the `mdat`.
    pub data: bytes::Bytes,
    /// How long the sample lasts, in its track's timescale.
    pub duration: u32,
    /// Whether a decoder can start here (an IDR picture). Ignored for audio: every Opus
    /// packet is a sync sample.
    pub keyframe: bool,
}

/// The video track's timescale: ticks per second, the same as RTP's H.264 clock.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// The audio track's timescale: Opus always decodes at 48 kHz.
pub const AUDIO_TIMESCALE: u32 = 48_000;

/// The video track's ID in the `moov` and in every fragment.
const VIDEO_TRACK_ID: u32 = 1;
/// The audio track's ID, when there is audio.
const AUDIO_TRACK_ID: u32 = 2;
/// The `mvhd` timescale; durations are all 0 (unknown), so it only has to be valid.
const MOVIE_TIMESCALE: u32 = 1000;
/// Samples of decoder delay the Opus encoder adds at 48 kHz (libopus' usual lookahead).
const OPUS_PRE_SKIP: u16 = 312;
/// Sample flags of a sync sample: it depends on no other sample (`sample_depends_on` = 2).
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// Sample flags of any other video sample: `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE: u32 = 0x0001_0000;
/// The `tfhd` flag that makes the data offsets relative to the start of the `moof`.
const DEFAULT_BASE_IS_MOOF: u32 = 0x0002_0000;
/// Bytes in a box header of 32-bit size (size and type).
const BOX_HEADER: usize = 8;

/// ftyp + moov (with mvex/trex, empty sample tables), track 1 video, track 2 audio if any.
pub fn init_segment(video: &VideoTrack, audio: Option<&AudioTrack>) -> Result<Vec<u8>, Error> {
    let mut trak = vec![video_trak(video)?];
    let mut defaults = vec![trex(VIDEO_TRACK_ID)];
    if let Some(audio) = audio {
        trak.push(audio_trak(audio)?);
        defaults.push(trex(AUDIO_TRACK_ID));
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: MOVIE_TIMESCALE,
            duration: 0,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: trak.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: defaults,
        }),
        trak,
        ..Default::default()
    };
    let mut out = Vec::new();
    ftyp(audio.is_some()).encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(out)
}

/// One fragment: moof (mfhd with `sequence`, one traf per track that has samples: tfhd with
/// default-base-is-moof, tfdt with the base decode time, trun with data offset, per-sample
/// duration, size and flags (sync sample flags for keyframes / audio, non-sync 0x00010000 for
/// other video)) followed by one mdat holding the video samples then the audio samples. The
/// trun data offsets point at each track's first sample inside the mdat (relative to the
/// start of the moof).
///
/// `video_start` and `audio_start` are the decode times of the first sample of each track,
/// in its timescale (the sum of the durations of every earlier sample of that track). An
/// empty `video` or `audio` slice leaves that track out of the fragment. Audio must only be
/// given if the init segment has an audio track.
pub fn fragment(
    sequence: u32,
    video: &[Sample],
    video_start: u64,
    audio: &[Sample],
    audio_start: u64,
) -> Result<Vec<u8>, Error> {
    let tracks = [
        (VIDEO_TRACK_ID, video, video_start),
        (AUDIO_TRACK_ID, audio, audio_start),
    ];
    let tracks: Vec<_> = tracks.into_iter().filter(|t| !t.1.is_empty()).collect();
    // The moof's size does not depend on the offsets' values, so encode it once to learn
    // where the mdat's payload starts, then again with the real offsets.
    let mut offsets = vec![0; tracks.len()];
    let mut moof = encode_moof(sequence, &tracks, &offsets)?;
    let mut next = moof.len() + BOX_HEADER;
    for (offset, (_, samples, _)) in offsets.iter_mut().zip(&tracks) {
        *offset = i32::try_from(next).map_err(|_| Error::TooLarge(Moof::KIND))?;
        next += samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let sized = moof.len();
    moof = encode_moof(sequence, &tracks, &offsets)?;
    debug_assert_eq!(moof.len(), sized);
    let mut data = Vec::with_capacity(next - sized - BOX_HEADER);
    for (_, samples, _) in &tracks {
        samples.iter().for_each(|s| data.extend_from_slice(&s.data));
    }
    Mdat { data }.encode(&mut moof)?;
    Ok(moof)
}

/// The file type: ISO base media (`iso6`: fragments with `tfdt` and default-base-is-moof),
/// MP4, H.264, and the Opus-in-ISOBMFF brand when there is audio.
fn ftyp(with_audio: bool) -> Ftyp {
    let mut compatible_brands: Vec<FourCC> = vec![
        b"iso6".into(),
        b"isom".into(),
        b"mp41".into(),
        b"avc1".into(),
    ];
    if with_audio {
        compatible_brands.push(b"Opus".into());
    }
    Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands,
    }
}

/// Defaults for one track's fragments: the first (only) sample description; everything
/// else is given in each `trun`.
fn trex(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        ..Default::default()
    }
}

/// A track header, duration unknown.
fn tkhd(track_id: u32) -> Tkhd {
    Tkhd {
        track_id,
        enabled: true,
        ..Default::default()
    }
}

/// A media box with an empty sample table around `codec`.
fn mdia(timescale: u32, handler: &[u8; 4], name: &str, minf: Minf, codec: Codec) -> Mdia {
    Mdia {
        mdhd: Mdhd {
            timescale,
            language: "und".into(),
            ..Default::default()
        },
        hdlr: Hdlr {
            handler: handler.into(),
            name: name.into(),
        },
        minf: Minf {
            dinf: Dinf {
                dref: Dref {
                    urls: vec![Url::default()],
                },
            },
            stbl: Stbl {
                stsd: Stsd {
                    codecs: vec![codec],
                },
                stco: Some(Stco::default()),
                ..Default::default()
            },
            ..minf
        },
    }
}

/// Track 1: H.264 in an `avc1` sample entry whose `avcC` carries the SPS and PPS.
fn video_trak(video: &VideoTrack) -> Result<Trak, Error> {
    let width = u16::try_from(video.width).map_err(|_| Error::InvalidSize)?;
    let height = u16::try_from(video.height).map_err(|_| Error::InvalidSize)?;
    let avc1 = Avc1 {
        visual: Visual {
            data_reference_index: 1,
            width,
            height,
            ..Default::default()
        },
        // Profile, compatibility and level are SPS bytes 1 to 3; NAL lengths take 4 bytes.
        avcc: Avcc::new(&video.sps, &video.pps)?,
        ..Default::default()
    };
    let minf = Minf {
        vmhd: Some(Vmhd::default()),
        ..Default::default()
    };
    Ok(Trak {
        tkhd: Tkhd {
            width: width.into(),
            height: height.into(),
            ..tkhd(VIDEO_TRACK_ID)
        },
        mdia: mdia(VIDEO_TIMESCALE, b"vide", "VideoHandler", minf, avc1.into()),
        ..Default::default()
    })
}

/// Track 2: Opus in an `Opus` sample entry with its `dOps` (channel mapping family 0).
fn audio_trak(audio: &AudioTrack) -> Result<Trak, Error> {
    if !(1..=2).contains(&audio.channels) {
        return Err(Error::Unsupported(
            "Opus channel mapping family 0 carries 1 or 2 channels",
        ));
    }
    let opus = Opus {
        audio: Audio {
            data_reference_index: 1,
            channel_count: audio.channels,
            sample_size: 16,
            sample_rate: (AUDIO_TIMESCALE as u16).into(),
        },
        dops: Dops {
            output_channel_count: audio.channels as u8,
            pre_skip: OPUS_PRE_SKIP,
            input_sample_rate: AUDIO_TIMESCALE,
            output_gain: 0,
        },
    };
    let minf = Minf {
        smhd: Some(Smhd::default()),
        ..Default::default()
    };
    Ok(Trak {
        tkhd: Tkhd {
            volume: 1.into(),
            ..tkhd(AUDIO_TRACK_ID)
        },
        mdia: mdia(AUDIO_TIMESCALE, b"soun", "SoundHandler", minf, opus.into()),
        ..Default::default()
    })
}

/// The `moof` for `tracks` (ID, samples, base decode time), each `trun` pointing
/// `data_offsets` bytes past the start of the `moof`.
fn encode_moof(
    sequence: u32,
    tracks: &[(u32, &[Sample], u64)],
    data_offsets: &[i32],
) -> Result<Vec<u8>, Error> {
    let moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: tracks
            .iter()
            .zip(data_offsets)
            .map(|(&(id, samples, start), &offset)| traf(id, samples, start, offset))
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    moof.encode(&mut out)?;
    set_default_base_is_moof(&mut out)?;
    Ok(out)
}

/// One track's run of samples in a fragment.
fn traf(track_id: u32, samples: &[Sample], start: u64, data_offset: i32) -> Result<Traf, Error> {
    let video = track_id == VIDEO_TRACK_ID;
    let entries = samples
        .iter()
        .map(|sample| {
            let sync = !video || sample.keyframe;
            Ok(TrunEntry {
                duration: Some(sample.duration),
                size: Some(u32::try_from(sample.data.len()).map_err(|_| Error::InvalidSize)?),
                flags: Some(if sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
                cts: None,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Traf {
        tfhd: Tfhd {
            track_id,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: start,
        }),
        trun: vec![Trun {
            data_offset: Some(data_offset),
            entries,
        }],
        ..Default::default()
    })
}

/// Sets default-base-is-moof in every `tfhd` of an encoded `moof`.
///
/// mp4-atom 0.9.2's `Tfhd` has no field for this flag and always encodes it clear. Without
/// it, the second track's data offset counts from the end of the first track's data for
/// ffmpeg (and Chromium's `<video>`, which demuxes with ffmpeg), but from the `moof` for
/// Chromium's Media Source parser; with it, both count from the `moof`.
fn set_default_base_is_moof(moof: &mut [u8]) -> Result<(), Error> {
    // Children of the moof: the mfhd, then the trafs; each traf starts with its tfhd.
    let mut at = BOX_HEADER;
    while at < moof.len() {
        let child = box_at(moof, at)?;
        if child.kind == Traf::KIND {
            let tfhd_at = at + BOX_HEADER;
            if box_at(moof, tfhd_at)?.kind != Tfhd::KIND {
                return Err(Error::MissingBox(Tfhd::KIND));
            }
            let flags_at = tfhd_at + BOX_HEADER;
            // The tfhd's version (1 byte) and flags (3 bytes), after its header.
            let field = moof
                .get_mut(flags_at..flags_at + 4)
                .ok_or(Error::OutOfBounds)?;
            let flags = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            field.copy_from_slice(&(flags | DEFAULT_BASE_IS_MOOF).to_be_bytes());
        }
        at += BOX_HEADER + child.size.ok_or(Error::InvalidSize)?;
    }
    Ok(())
}

/// The header of the box that starts `at` bytes into `bytes`.
fn box_at(bytes: &[u8], at: usize) -> Result<Header, Error> {
    let mut rest = bytes.get(at..).ok_or(Error::OutOfBounds)?;
    mp4_atom::Decode::decode(&mut rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::Decode as _;
    use openh264::OpenH264API;
    use openh264::encoder::{Encoder, EncoderConfig, FrameRate, RateControlMode};
    use openh264::formats::YUVBuffer;
    use std::ops::Range;
    use std::path::PathBuf;
    use std::process::Command;

    const WIDTH: usize = 320;
    const HEIGHT: usize = 240;
    /// Pictures per second, and per fragment.
    const FPS: usize = 30;
    /// Opus packets (20 ms) per second, and per fragment.
    const PACKETS: usize = 50;
    /// Samples per channel in one 20 ms Opus packet.
    const OPUS_FRAME: usize = 960;

    /// Encoded video: the track's parameter sets and one AVCC sample per picture.
    struct Video {
        track: VideoTrack,
        samples: Vec<Sample>,
    }

    /// A grey diagonal gradient that moves `i` steps.
    fn gradient(i: usize) -> YUVBuffer {
        let mut yuv = vec![128u8; WIDTH * HEIGHT * 3 / 2];
        for (at, luma) in yuv[..WIDTH * HEIGHT].iter_mut().enumerate() {
            let (x, y) = (at % WIDTH, at / WIDTH);
            *luma = (16 + (x + y + 4 * i) % 220) as u8;
        }
        YUVBuffer::from_vec(yuv, WIDTH, HEIGHT)
    }

    /// A NAL unit from openh264's Annex B output without its start code (and without the
    /// zero byte of the next one's 4-byte start code that `nal_units` leaves at its end).
    fn strip_start_code(nal: &[u8]) -> &[u8] {
        let nal = nal.strip_prefix(&[0, 0, 1]).expect("a start code");
        let end = nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        &nal[..end]
    }

    /// `pictures` pictures at 30 fps, an IDR every second; SPS and PPS go to the track.
    fn encode_video(pictures: usize) -> Video {
        // Rate control off: every picture comes out (no skipped frames), at a fixed quality.
        let config = EncoderConfig::new()
            .rate_control_mode(RateControlMode::Off)
            .max_frame_rate(FrameRate::from_hz(FPS as f32))
            .skip_frames(false);
        let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).unwrap();
        let (mut sps, mut pps, mut samples) = (None, None, Vec::new());
        for i in 0..pictures {
            // The first picture is an IDR anyway (and the encoder starts on it).
            if i > 0 && i % FPS == 0 {
                encoder.force_intra_frame();
            }
            let annex_b = encoder.encode(&gradient(i)).unwrap().to_vec();
            let (mut avcc, mut keyframe) = (Vec::new(), false);
            for nal in openh264::nal_units(&annex_b).map(strip_start_code) {
                match nal[0] & 0x1f {
                    7 => sps = Some(nal.to_vec()),
                    8 => pps = Some(nal.to_vec()),
                    kind => {
                        keyframe |= kind == 5;
                        avcc.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                        avcc.extend_from_slice(nal);
                    }
                }
            }
            assert!(!avcc.is_empty(), "picture {i} produced no slice");
            assert_eq!(keyframe, i % FPS == 0, "picture {i}");
            samples.push(Sample {
                data: avcc.into(),
                duration: VIDEO_TIMESCALE / FPS as u32,
                keyframe,
            });
        }
        let track = VideoTrack {
            width: WIDTH as u32,
            height: HEIGHT as u32,
            sps: sps.expect("an SPS"),
            pps: pps.expect("a PPS"),
        };
        Video { track, samples }
    }

    /// `packets` 20 ms mono Opus packets of a 440 Hz sine.
    fn encode_audio(packets: usize) -> Vec<Sample> {
        let mut encoder = opus::Encoder::new(
            AUDIO_TIMESCALE,
            opus::Channels::Mono,
            opus::Application::Audio,
        )
        .unwrap();
        let mut out = [0u8; 4000];
        (0..packets)
            .map(|p| {
                let pcm: Vec<i16> = (0..OPUS_FRAME)
                    .map(|n| {
                        let t = (p * OPUS_FRAME + n) as f32 / AUDIO_TIMESCALE as f32;
                        ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                    })
                    .collect();
                let len = encoder.encode(&pcm, &mut out).unwrap();
                Sample {
                    data: bytes::Bytes::copy_from_slice(&out[..len]),
                    duration: OPUS_FRAME as u32,
                    keyframe: true,
                }
            })
            .collect()
    }

    /// An init segment and one fragment per second; also where each fragment lies.
    fn record(video: &Video, audio: &[Sample]) -> (Vec<u8>, Vec<Range<usize>>) {
        let audio_track = AudioTrack { channels: 1 };
        let mut file = init_segment(&video.track, Some(&audio_track)).unwrap();
        let (mut fragments, mut video_start, mut audio_start) = (Vec::new(), 0, 0);
        let seconds = video.samples.chunks(FPS).zip(audio.chunks(PACKETS));
        for (sequence, (pictures, packets)) in (1..).zip(seconds) {
            assert!(pictures[0].keyframe);
            let start = file.len();
            let bytes = fragment(sequence, pictures, video_start, packets, audio_start).unwrap();
            file.extend_from_slice(&bytes);
            fragments.push(start..file.len());
            video_start += pictures.iter().map(|s| u64::from(s.duration)).sum::<u64>();
            audio_start += packets.iter().map(|s| u64::from(s.duration)).sum::<u64>();
        }
        (file, fragments)
    }

    /// A file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let unique = format!("onaird-fmp4-{}-{nanos}-{name}.mp4", std::process::id());
            let path = std::env::temp_dir().join(unique);
            std::fs::write(&path, bytes).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// What ffprobe reports: each stream's codec name and the frames it decoded.
    fn ffprobe(file: &TempFile) -> Vec<(String, u64)> {
        let output = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,nb_read_frames",
            ])
            .args(["-count_frames", "-of", "json"])
            .arg(&file.0)
            .output()
            .expect("ffprobe (from ffmpeg) must be installed for this test");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "ffprobe failed: {stderr}");
        println!(
            "ffprobe: {}{stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let streams = json["streams"].as_array().expect("streams");
        streams
            .iter()
            .map(|s| {
                let frames = s["nb_read_frames"].as_str().unwrap_or("0");
                (
                    s["codec_name"].as_str().unwrap().to_owned(),
                    frames.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn three_seconds_probe_and_decode_cleanly() {
        let video = encode_video(3 * FPS);
        let audio = encode_audio(3 * PACKETS);
        let (file, _) = record(&video, &audio);
        let file = TempFile::new("whole", &file);
        let streams = ffprobe(&file);
        assert_eq!(
            streams,
            [
                ("h264".to_owned(), 3 * FPS as u64),
                ("opus".to_owned(), streams[1].1)
            ]
        );
        assert!(streams[1].1 > 100, "{streams:?}");

        let output = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&file.0)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg must be installed for this test");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "ffmpeg failed: {stderr}");
        assert_eq!(stderr, "", "ffmpeg complained while decoding");
    }

    #[test]
    fn a_cut_off_fragment_leaves_the_complete_ones_readable() {
        let video = encode_video(3 * FPS);
        let audio = encode_audio(3 * PACKETS);
        let (file, fragments) = record(&video, &audio);
        let last = &fragments[2];
        let moof_len = box_at(&file, last.start).unwrap().size.unwrap() + BOX_HEADER;
        let complete = (2 * FPS as u64, 2 * PACKETS as u64);

        // The last moof written, none of its mdat: exactly the first two seconds.
        let streams = ffprobe(&TempFile::new("no-mdat", &file[..last.start + moof_len]));
        let counts = (streams[0].1, streams[1].1);
        assert_eq!(
            (streams[0].0.as_str(), streams[1].0.as_str()),
            ("h264", "opus")
        );
        assert_eq!(counts, complete, "{streams:?}");

        // Cut in the middle of the last mdat: the first two seconds and whatever samples of
        // the third made it to disk whole.
        let cut = last.start + moof_len + (last.len() - moof_len) / 2;
        let streams = ffprobe(&TempFile::new("half-mdat", &file[..cut]));
        let counts = (streams[0].1, streams[1].1);
        assert!(
            counts.0 >= complete.0 && counts.0 < 3 * FPS as u64,
            "{streams:?}"
        );
        assert!(
            counts.1 >= complete.1 && counts.1 < 3 * PACKETS as u64,
            "{streams:?}"
        );
        // (A cut inside a tfdt or trun is another matter: ffmpeg 5.1 reads every moof
        // while opening the file and gives up on the whole file at a truncated one.)
    }

    fn sample(data: &[u8], keyframe: bool) -> Sample {
        Sample {
            data: bytes::Bytes::copy_from_slice(data),
            duration: 3000,
            keyframe,
        }
    }

    #[test]
    fn data_offsets_point_at_each_tracks_first_sample() {
        let video = [sample(b"idr-picture", true), sample(b"p", false)];
        let audio = [sample(b"opus-1", true), sample(b"opus-2", true)];
        let bytes = fragment(7, &video, 90_000, &audio, 48_000).unwrap();
        let moof = Moof::decode(&mut bytes.as_slice()).unwrap();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let firsts: [&[u8]; 2] = [b"idr-picture", b"opus-1"];
        for (traf, first) in moof.traf.iter().zip(firsts) {
            let offset = traf.trun[0].data_offset.unwrap() as usize;
            assert_eq!(&bytes[offset..offset + first.len()], first);
        }
        assert_eq!(
            moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time,
            90_000
        );
        assert_eq!(
            moof.traf[1].tfdt.as_ref().unwrap().base_media_decode_time,
            48_000
        );
        let flags: Vec<_> = moof.traf[0].trun[0]
            .entries
            .iter()
            .map(|e| e.flags)
            .collect();
        assert_eq!(flags, [Some(SYNC_SAMPLE), Some(NON_SYNC_SAMPLE)]);
        // Every tfhd says its offsets count from the moof.
        let mut traf_at =
            BOX_HEADER + box_at(&bytes, BOX_HEADER).unwrap().size.unwrap() + BOX_HEADER;
        for _ in &moof.traf {
            let tfhd_flags = &bytes[traf_at + 2 * BOX_HEADER..traf_at + 2 * BOX_HEADER + 4];
            assert_eq!(
                u32::from_be_bytes(tfhd_flags.try_into().unwrap()),
                DEFAULT_BASE_IS_MOOF
            );
            traf_at += box_at(&bytes, traf_at).unwrap().size.unwrap() + BOX_HEADER;
        }
    }

    #[test]
    fn a_track_without_samples_has_no_traf() {
        let audio = [sample(b"opus", true)];
        let bytes = fragment(1, &[], 0, &audio, 0).unwrap();
        let moof = Moof::decode(&mut bytes.as_slice()).unwrap();
        assert_eq!(moof.traf.len(), 1);
        assert_eq!(moof.traf[0].tfhd.track_id, AUDIO_TRACK_ID);
        let offset = moof.traf[0].trun[0].data_offset.unwrap() as usize;
        assert_eq!(&bytes[offset..], b"opus");
    }

    #[test]
    fn init_segment_describes_both_tracks() {
        let video = VideoTrack {
            width: 640,
            height: 480,
            sps: vec![0x67, 0x42, 0xc0, 0x1e, 0xda],
            pps: vec![0x68, 0xce, 0x3c, 0x80],
        };
        let bytes = init_segment(&video, Some(&AudioTrack { channels: 2 })).unwrap();
        let buf = &mut bytes.as_slice();
        let ftyp = Ftyp::decode(buf).unwrap();
        assert_eq!(ftyp.major_brand, FourCC::new(b"iso6"));
        let moov = Moov::decode(buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(moov.mvex.unwrap().trex.len(), 2);
        let Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not avc1")
        };
        let avcc = &avc1.avcc;
        let profile = (avcc.avc_profile_indication, avcc.profile_compatibility);
        assert_eq!((profile, avcc.avc_level_indication), ((0x42, 0xc0), 0x1e));
        assert_eq!(avcc.length_size, 4);
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, VIDEO_TIMESCALE);
        let Codec::Opus(opus) = &moov.trak[1].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not Opus")
        };
        assert_eq!(opus.dops.output_channel_count, 2);
        assert_eq!(opus.dops.pre_skip, 312);
        assert_eq!(moov.trak[1].mdia.mdhd.timescale, AUDIO_TIMESCALE);
        assert!(init_segment(&video, Some(&AudioTrack { channels: 3 })).is_err());
    }
}
