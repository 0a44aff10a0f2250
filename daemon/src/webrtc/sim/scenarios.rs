//! What viewers see through emulated networks, in simulated time. Each scenario prints what
//! it measured (`cargo test -p onair-daemon --lib sim:: -- --nocapture`).
//!
//! The default stream: 2 Mbit/s at the top, 400 kbit/s below, 30 fps, an IDR every 2 s, and
//! 64 kbit/s of audio. A path's queue holds at most 200 ms, as `tbf` in the end-to-end tests.

use std::time::Duration;

use super::{LinkShape as Shape, Summary, World, default_layers};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

fn report(name: &str, summary: &Summary) {
    eprintln!("{name}: {summary:?}");
}

/// A path with `delay` each way, capped at `bits_per_second` from onaird.
fn join_capped(world: &mut World, bits_per_second: u64, delay: Duration, twcc: bool) -> usize {
    world.join(
        Shape::capped(bits_per_second, delay),
        Shape::clean(delay),
        twcc,
    )
}

#[test]
fn a_viewer_on_a_clean_path_sees_every_picture_of_the_top_layer_at_once() {
    let mut world = World::new(&default_layers());
    let viewer = world.join(Shape::clean(10 * MS), Shape::clean(10 * MS), true);
    world.run_until(20 * SECOND);
    let seen = world.summary(viewer, 2 * SECOND, 20 * SECOND);
    report("clean path", &seen);
    assert!(seen.fps >= 29.5, "{seen:?}");
    assert_eq!(seen.layer_changes, 0, "{seen:?}");
    assert!(seen.on_layer[0] == 1.0, "{seen:?}");
    assert!(seen.latency_p95 < 50 * MS, "{seen:?}");
    assert_eq!(seen.undecodable, 0);
    assert_eq!(seen.pictures, 18 * 30, "{seen:?}");
}

#[test]
fn behind_a_steady_1_mbit_link_for_10_minutes_the_picture_never_freezes_and_rarely_switches() {
    let mut world = World::new(&default_layers());
    let viewer = join_capped(&mut world, 1_000_000, 20 * MS, true);
    world.run_until(10 * MINUTE);
    let seen = world.summary(viewer, 10 * SECOND, 10 * MINUTE);
    report("1 Mbit/s for 10 min", &seen);
    assert!(seen.longest_freeze <= 500 * MS, "{seen:?}");
    assert!(seen.freezes.is_empty(), "no freeze over 300 ms: {seen:?}");
    assert!(seen.layer_changes <= 2 * 10, "{seen:?}");
    assert!(seen.fps >= 25.0, "{seen:?}");
    // No queue inside onaird holds pictures: they wait only in the link's (200 ms at most).
    assert!(seen.latency_max <= 400 * MS, "{seen:?}");
}

#[test]
fn when_the_link_drops_from_4_mbit_to_600_kbit_the_low_layer_comes_within_2_s_and_the_top_again_after()
 {
    let mut world = World::new(&default_layers());
    let viewer = join_capped(&mut world, 4_000_000, 20 * MS, true);
    world.run_until(20 * SECOND);
    let before = world.summary(viewer, 5 * SECOND, 20 * SECOND);
    report("4 Mbit/s", &before);
    assert!(
        before.on_layer[0] == 1.0 && before.fps >= 29.5,
        "{before:?}"
    );

    world.set_down(viewer, Shape::capped(600_000, 20 * MS));
    world.run_until(60 * SECOND);
    // The first picture of the low layer after the drop.
    let dropped_at = 20 * SECOND;
    let low_from = world
        .seen(viewer)
        .shown
        .iter()
        .find(|s| s.at >= world.start + dropped_at && s.stamp.layer == 1)
        .map(|s| s.at - world.start - dropped_at);
    let narrow = world.summary(viewer, 20 * SECOND, 60 * SECOND);
    report("600 kbit/s", &narrow);
    eprintln!("low layer {low_from:?} after the drop");
    assert!(
        low_from.is_some_and(|after| after <= 2 * SECOND),
        "{low_from:?}"
    );
    assert!(narrow.longest_freeze <= SECOND, "{narrow:?}");
    let settled = world.summary(viewer, 25 * SECOND, 60 * SECOND);
    assert!(
        settled.on_layer[1] >= 0.9 && settled.fps >= 25.0,
        "{settled:?}"
    );
    assert!(settled.latency_p95 <= 400 * MS, "{settled:?}");

    world.set_down(viewer, Shape::capped(4_000_000, 20 * MS));
    world.run_until(120 * SECOND);
    let after = world.summary(viewer, 60 * SECOND, 120 * SECOND);
    report("4 Mbit/s again", &after);
    let top_again = world.summary(viewer, 100 * SECOND, 120 * SECOND);
    assert!(top_again.on_layer[0] == 1.0, "{top_again:?}");
    assert!(after.longest_freeze <= SECOND, "{after:?}");
}

#[test]
fn with_5_percent_random_loss_a_viewer_still_decodes_25_pictures_a_second() {
    let mut world = World::new(&default_layers());
    let lossy = Shape {
        loss: 0.05,
        ..Shape::clean(20 * MS)
    };
    let viewer = world.join(lossy, lossy, true);
    world.run_until(60 * SECOND);
    let seen = world.summary(viewer, 5 * SECOND, 60 * SECOND);
    report("5 % loss", &seen);
    assert!(seen.fps >= 25.0, "{seen:?}");
    assert!(seen.longest_freeze <= SECOND, "{seen:?}");
}

#[test]
fn across_300_ms_of_round_trip_a_viewer_sees_the_top_layer_smoothly() {
    let mut world = World::new(&default_layers());
    let viewer = join_capped(&mut world, 4_000_000, 150 * MS, true);
    world.run_until(60 * SECOND);
    let seen = world.summary(viewer, 5 * SECOND, 60 * SECOND);
    report("300 ms RTT", &seen);
    assert!(seen.fps >= 29.0 && seen.on_layer[0] == 1.0, "{seen:?}");
    // The path's 150 ms, and up to 100 ms more.
    assert!(seen.latency_p50 >= 150 * MS, "{seen:?}");
    assert!(seen.latency_p95 <= 150 * MS + 100 * MS, "{seen:?}");
}

#[test]
fn fifty_viewers_joining_within_a_second_all_see_the_picture() {
    let mut world = World::new(&default_layers());
    let joined = |i: u32| SECOND + 20 * MS * i;
    let viewers: Vec<usize> = (0..50)
        .map(|i| {
            world.run_until(joined(i));
            world.join(Shape::clean(10 * MS), Shape::clean(10 * MS), true)
        })
        .collect();
    world.run_until(12 * SECOND);
    assert_eq!(world.viewers(), 50);
    let mut slowest = Duration::ZERO;
    for (i, viewer) in viewers.into_iter().enumerate() {
        let first = world.seen(viewer).shown.first().map(|s| s.at - world.start);
        let waited = first.map_or(Duration::MAX, |at| at - joined(i as u32));
        slowest = slowest.max(waited);
        let seen = world.summary(viewer, 4 * SECOND, 12 * SECOND);
        assert!(waited <= 2 * SECOND, "viewer {viewer}: {first:?}");
        assert!(
            seen.fps >= 29.5 && seen.longest_freeze <= 100 * MS,
            "viewer {viewer}: {seen:?}"
        );
    }
    eprintln!("50 viewers joining in 1 s: the slowest saw a picture {slowest:?} after its offer");
}

#[test]
fn a_viewer_without_twcc_behind_1_mbit_sees_pictures_within_400_ms() {
    let mut world = World::new(&default_layers());
    let viewer = join_capped(&mut world, 1_000_000, 20 * MS, false);
    world.run_until(2 * MINUTE);
    let seen = world.summary(viewer, 2 * SECOND, 2 * MINUTE);
    report("no TWCC, 1 Mbit/s", &seen);
    assert_eq!(
        world.figures(viewer).and_then(|f| f.estimate_from),
        Some("receiver reports")
    );
    assert!(seen.latency_p95 <= 400 * MS, "{seen:?}");
    assert!(seen.fps >= 25.0, "{seen:?}");
    // Without TWCC only trying the top layer tells whether it fits: a trial that fails
    // freezes the picture until the low layer's key frame is back, and the trials grow
    // rarer (up to one a minute).
    assert!(seen.longest_freeze <= 2 * SECOND, "{seen:?}");
}

#[test]
fn a_viewer_offering_to_send_is_answered_send_only_and_watches_as_usual() {
    // A browser page that adds its camera and microphone offers `sendrecv`; nothing a viewer
    // sends is taken (yet: talkback will be the operator's alone).
    let mut world = World::new(&default_layers());
    let (viewer, answer) = world.join_offering(
        Shape::clean(10 * MS),
        Shape::clean(10 * MS),
        true,
        |offer| offer.replace("a=recvonly", "a=sendrecv"),
    );
    let directions = |sdp: &str| -> Vec<String> {
        sdp.lines()
            .map(str::trim)
            .filter(|l| ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(l))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        directions(&answer),
        ["a=sendonly", "a=sendonly"],
        "{answer}"
    );
    world.run_until(5 * SECOND);
    let seen = world.summary(viewer, 2 * SECOND, 5 * SECOND);
    report("offered sendrecv", &seen);
    assert!(seen.fps >= 29.5, "{seen:?}");
    // The offer taken again at an ICE restart proposes sendrecv again.
    let restarted = world.restart(viewer);
    assert_eq!(
        directions(&restarted),
        ["a=sendonly", "a=sendonly"],
        "{restarted}"
    );
}
