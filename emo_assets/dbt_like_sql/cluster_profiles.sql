-- One row per embedding cluster of each cluster-model version: its size, mean emotion scores,
-- dominant emotion (the class with the highest mean score; ties go to the first class in canonical
-- order), how tight it is (mean distance to the centroid) and the days it spans.
-- Cluster ids of two model versions are unrelated, so they are never pooled: `model_version`
-- is part of the key (a refit re-assigns every day, so normally there is one version).
-- Recordings without emotion scores still count in `recordings`; they do not move the means.
-- A two-channel call is clustered and profiled by its customer's channel.
with clustered as (
    select
        c.model_version,
        c.cluster_id,
        c.date,
        c.distance,
        s.angry,
        s.disgusted,
        s.fearful,
        s.happy,
        s.neutral,
        s.other,
        s.sad,
        s.surprised,
        s.unknown
    from emotion_clusters as c
    left join emotion_scores as s
        on s.audio_id = c.audio_id
        and s.date = c.date
        and coalesce(s.channel, 'mono') in ('mono', 'customer')
),

profiles as (
    select
        model_version,
        cluster_id,
        count(*) as recordings,
        avg(angry) as mean_angry,
        avg(disgusted) as mean_disgusted,
        avg(fearful) as mean_fearful,
        avg(happy) as mean_happy,
        avg(neutral) as mean_neutral,
        avg(other) as mean_other,
        avg(sad) as mean_sad,
        avg(surprised) as mean_surprised,
        avg(unknown) as mean_unknown,
        avg(distance) as mean_distance,
        min(date) as first_date,
        max(date) as last_date
    from clustered
    group by model_version, cluster_id
)

select
    model_version,
    cluster_id,
    recordings,
    case greatest(
        mean_angry, mean_disgusted, mean_fearful, mean_happy, mean_neutral,
        mean_other, mean_sad, mean_surprised, mean_unknown
    )
        when mean_angry then 'angry'
        when mean_disgusted then 'disgusted'
        when mean_fearful then 'fearful'
        when mean_happy then 'happy'
        when mean_neutral then 'neutral'
        when mean_other then 'other'
        when mean_sad then 'sad'
        when mean_surprised then 'surprised'
        when mean_unknown then 'unknown'
    end as dominant_emotion,
    mean_angry,
    mean_disgusted,
    mean_fearful,
    mean_happy,
    mean_neutral,
    mean_other,
    mean_sad,
    mean_surprised,
    mean_unknown,
    mean_distance,
    first_date,
    last_date
from profiles
order by model_version, cluster_id
