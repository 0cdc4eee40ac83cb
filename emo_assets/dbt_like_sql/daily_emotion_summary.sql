-- One row per day and embedding model: how much audio was processed and how it felt.
-- A recording is a row of audio_files (two byte-identical files under different paths share an
-- audio_id but count twice); only recordings with emotion scores for the same day count.
-- share_<emotion> is the share of those recordings whose top emotion is that class.
-- A two-channel call counts once, by its customer's channel (README "Two-channel calls").
with scored as (
    select
        f.date,
        s.model_id,
        f.duration_s,
        s.confidence,
        s.emotion
    from audio_files as f
    join emotion_scores as s
        on s.audio_id = f.audio_id
        and s.date = f.date
        and coalesce(s.channel, 'mono') in ('mono', 'customer')
)

select
    date,
    model_id,
    count(*) as files,
    sum(duration_s) / 3600.0 as hours,
    avg(confidence) as mean_confidence,
    avg(case when emotion = 'angry' then 1.0 else 0.0 end) as share_angry,
    avg(case when emotion = 'disgusted' then 1.0 else 0.0 end) as share_disgusted,
    avg(case when emotion = 'fearful' then 1.0 else 0.0 end) as share_fearful,
    avg(case when emotion = 'happy' then 1.0 else 0.0 end) as share_happy,
    avg(case when emotion = 'neutral' then 1.0 else 0.0 end) as share_neutral,
    avg(case when emotion = 'other' then 1.0 else 0.0 end) as share_other,
    avg(case when emotion = 'sad' then 1.0 else 0.0 end) as share_sad,
    avg(case when emotion = 'surprised' then 1.0 else 0.0 end) as share_surprised,
    avg(case when emotion = 'unknown' then 1.0 else 0.0 end) as share_unknown
from scored
group by date, model_id
order by date, model_id
