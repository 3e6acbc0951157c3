//! The feed's data and ranking: users, videos, follows and likes in memory, generated from a
//! fixed seed; ranking does real CPU work per request (embedding similarity over the
//! candidates), the few hundred microseconds a typical feed back end spends.

use std::collections::HashMap;

/// Embedding width: the cost knob of ranking.
pub const DIM: usize = 192;

/// Deterministic xorshift64* generator (no external randomness).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[derive(Clone, Debug)]
pub struct Video {
    pub id: u32,
    pub author: u32,
    pub title: String,
    /// Seconds since the feed's epoch.
    pub published: u64,
    pub likes: u32,
    pub embedding: Vec<f32>,
}

pub struct Feed {
    pub videos: Vec<Video>,
    /// Per author, their videos, newest last.
    pub by_author: HashMap<u32, Vec<u32>>,
    /// Per user, the authors they follow.
    pub follows: Vec<Vec<u32>>,
    /// Per user, a taste embedding.
    pub taste: Vec<Vec<f32>>,
    /// The newest video ids, newest last (the "recent popular" pool is drawn from here).
    pub recent: Vec<u32>,
    pub now: u64,
}

/// One ranked item of a feed response.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ranked {
    pub video: u32,
    pub author: u32,
    pub title: String,
    pub score: f32,
}

fn embedding(rng: &mut Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.unit() - 0.5).collect()
}

impl Feed {
    /// A feed of `users` users and `videos` videos, the same for the same seed.
    #[must_use]
    pub fn generate(seed: u64, users: usize, videos: usize) -> Self {
        let mut rng = Rng::new(seed);
        let authors = (users / 10).max(1);
        let mut feed = Feed {
            videos: Vec::with_capacity(videos),
            by_author: HashMap::new(),
            follows: Vec::with_capacity(users),
            taste: Vec::with_capacity(users),
            recent: Vec::new(),
            now: 0,
        };
        for i in 0..videos {
            let author = rng.below(authors) as u32;
            let video = Video {
                id: i as u32,
                author,
                title: format!("video {i} by creator {author}"),
                published: i as u64 * 30,
                likes: (rng.next_u64() % 1000) as u32,
                embedding: embedding(&mut rng),
            };
            feed.by_author.entry(author).or_default().push(video.id);
            feed.videos.push(video);
        }
        feed.now = videos as u64 * 30;
        feed.recent = (videos.saturating_sub(2000)..videos)
            .map(|i| i as u32)
            .collect();
        for _ in 0..users {
            let n = 20 + rng.below(60);
            feed.follows
                .push((0..n).map(|_| rng.below(authors) as u32).collect());
            feed.taste.push(embedding(&mut rng));
        }
        feed
    }

    /// The top `limit` videos for `user`: candidates from followed authors' recent videos and
    /// the recent popular pool, scored by taste similarity, popularity and freshness.
    #[must_use]
    pub fn rank(&self, user: usize, limit: usize) -> Option<Vec<Ranked>> {
        let follows = self.follows.get(user)?;
        let taste = &self.taste[user];
        let mut candidates: Vec<u32> = Vec::with_capacity(1024);
        for author in follows {
            if let Some(list) = self.by_author.get(author) {
                candidates.extend(list.iter().rev().take(12));
            }
        }
        let step = (user % 7) + 1;
        candidates.extend(self.recent.iter().rev().step_by(step).take(300));
        candidates.sort_unstable();
        candidates.dedup();
        let mut scored: Vec<(f32, u32)> = candidates
            .iter()
            .map(|&id| {
                let v = &self.videos[id as usize];
                let similarity: f32 = v.embedding.iter().zip(taste).map(|(a, b)| a * b).sum();
                let age_hours = (self.now.saturating_sub(v.published)) as f32 / 3600.0;
                let freshness = 1.0 / (1.0 + age_hours / 24.0);
                let popularity = (1.0 + v.likes as f32).ln();
                (similarity * 4.0 + popularity * 0.5 + freshness * 2.0, id)
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        Some(
            scored
                .into_iter()
                .take(limit)
                .map(|(score, id)| {
                    let v = &self.videos[id as usize];
                    Ranked {
                        video: id,
                        author: v.author,
                        title: v.title.clone(),
                        score,
                    }
                })
                .collect(),
        )
    }

    /// Adds a video; returns its id.
    pub fn publish(&mut self, author: u32, title: String, seed: u64) -> u32 {
        let id = self.videos.len() as u32;
        self.now += 30;
        let mut rng = Rng::new(seed ^ u64::from(id));
        self.videos.push(Video {
            id,
            author,
            title,
            published: self.now,
            likes: 0,
            embedding: embedding(&mut rng),
        });
        self.by_author.entry(author).or_default().push(id);
        self.recent.push(id);
        if self.recent.len() > 4000 {
            self.recent.drain(..2000);
        }
        id
    }

    /// Likes a video; `None` when it does not exist.
    pub fn like(&mut self, video: u32) -> Option<u32> {
        let v = self.videos.get_mut(video as usize)?;
        v.likes += 1;
        Some(v.likes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_ranking_sorted() {
        let a = Feed::generate(7, 200, 3000);
        let b = Feed::generate(7, 200, 3000);
        let ra = a.rank(5, 10).unwrap();
        let rb = b.rank(5, 10).unwrap();
        assert_eq!(
            ra.iter().map(|r| r.video).collect::<Vec<_>>(),
            rb.iter().map(|r| r.video).collect::<Vec<_>>()
        );
        assert_eq!(ra.len(), 10);
        assert!(ra.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(a.rank(10_000, 10).is_none(), "unknown user");
    }

    #[test]
    fn publish_and_like_change_the_feed() {
        let mut f = Feed::generate(1, 50, 500);
        let id = f.publish(3, "new".into(), 9);
        assert_eq!(f.videos[id as usize].author, 3);
        assert_eq!(f.like(id), Some(1));
        assert_eq!(f.like(u32::MAX), None);
    }
}
