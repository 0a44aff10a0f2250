//! One direction of an emulated network path: random loss, a bottleneck of some rate with a
//! queue of bounded delay (tail drop, as `tbf` does), then propagation delay and jitter.
//! Datagrams come out in the order they went in.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A datagram on its way.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// A path's properties; change them at any time with [`Link::set`].
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Up to this much more, uniformly at random (never reordering).
    pub jitter: Duration,
    /// The fraction of datagrams lost at random.
    pub loss: f64,
    /// The bottleneck, bits per second; `None`: unlimited.
    pub rate: Option<u64>,
    /// The longest a datagram may wait at the bottleneck; later ones are dropped.
    pub queue: Duration,
}

impl Shape {
    /// A clean path with `delay` each way and no bottleneck.
    pub fn clean(delay: Duration) -> Self {
        Shape {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate: None,
            queue: Duration::from_millis(200),
        }
    }

    /// A bottleneck of `bits_per_second` with `delay`.
    pub fn capped(bits_per_second: u64, delay: Duration) -> Self {
        Shape {
            rate: Some(bits_per_second),
            ..Shape::clean(delay)
        }
    }
}

/// One direction of a path.
pub struct Link {
    shape: Shape,
    random: Random,
    /// When the bottleneck is free again.
    free_at: Option<Instant>,
    in_flight: VecDeque<(Instant, Datagram)>,
    /// Datagrams lost at random, and dropped at a full queue.
    pub lost: u64,
    pub dropped: u64,
}

impl Link {
    pub fn new(shape: Shape, seed: u64) -> Self {
        Link {
            shape,
            random: Random(seed),
            free_at: None,
            in_flight: VecDeque::new(),
            lost: 0,
            dropped: 0,
        }
    }

    /// Changes the path from now on (what is queued stays queued).
    pub fn set(&mut self, shape: Shape) {
        self.shape = shape;
    }

    /// `datagram` enters the path at `now`.
    pub fn send(&mut self, now: Instant, datagram: Datagram) {
        if self.random.fraction() < self.shape.loss {
            self.lost += 1;
            return;
        }
        let mut leaves = now;
        if let Some(rate) = self.shape.rate {
            let start = self.free_at.map_or(now, |free| free.max(now));
            if start - now > self.shape.queue {
                self.dropped += 1;
                return;
            }
            let bits = (datagram.data.len() as u64 + 28) * 8;
            leaves = start + Duration::from_nanos(bits * 1_000_000_000 / rate);
            self.free_at = Some(leaves);
        }
        let jitter = self.shape.jitter.mul_f64(self.random.fraction());
        let mut arrives = leaves + self.shape.delay + jitter;
        if let Some((last, _)) = self.in_flight.back() {
            arrives = arrives.max(*last);
        }
        self.in_flight.push_back((arrives, datagram));
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _)| *at)
    }

    /// The next datagram that has arrived by `now`.
    pub fn arrived(&mut self, now: Instant) -> Option<Datagram> {
        match self.in_flight.front() {
            Some((at, _)) if *at <= now => self.in_flight.pop_front().map(|(_, d)| d),
            _ => None,
        }
    }
}

/// A small deterministic generator (SplitMix64): every run of a scenario is the same.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(size: usize) -> Datagram {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Datagram {
            from: addr,
            to: addr,
            data: vec![0; size],
        }
    }

    #[test]
    fn a_bottleneck_spaces_datagrams_by_their_size_and_drops_beyond_its_queue() {
        let t = Instant::now();
        // 1 Mbit/s: a 1222-byte datagram (1250 on the wire) takes 10 ms.
        let mut link = Link::new(Shape::capped(1_000_000, Duration::from_millis(5)), 1);
        for _ in 0..30 {
            link.send(t, datagram(1222));
        }
        // 200 ms of queue: the 21 that start within it get through.
        assert_eq!(link.dropped, 9);
        let arrivals: Vec<Instant> = std::iter::from_fn(|| {
            let at = link.next_arrival()?;
            link.arrived(at).map(|_| at)
        })
        .collect();
        assert_eq!(arrivals.len(), 21);
        assert_eq!(arrivals[0] - t, Duration::from_millis(15));
        assert_eq!(arrivals[20] - t, Duration::from_millis(215));
    }

    #[test]
    fn random_loss_takes_about_its_fraction() {
        let t = Instant::now();
        let mut link = Link::new(
            Shape {
                loss: 0.05,
                ..Shape::clean(Duration::ZERO)
            },
            7,
        );
        for _ in 0..10_000 {
            link.send(t, datagram(100));
        }
        assert!((400..600).contains(&link.lost), "{} lost", link.lost);
    }
}
