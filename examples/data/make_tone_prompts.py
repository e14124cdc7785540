# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Write the chat prompts of the real-model recipe (`examples/configs/smollm2_tone.yaml`): requests whose answers can
be warm or matter-of-fact — reviews, replies to customers, product descriptions, advice, descriptions of places and
things. Each subject appears with two phrasings; the held-out split has subjects the training split never shows.

    python examples/data/make_tone_prompts.py    # writes examples/data/tone_prompts/{train,test}.jsonl

Each line is `{"prompt": [{"role": "user", "content": ...}], "kind": ...}`: conversational, as TRL trainers take
them (the model's chat template renders them).
"""

import json
import os
import random

REVIEWS = """a small Italian restaurant near the station|a budget hotel by the airport|a wireless keyboard|a noise-cancelling
headset|a museum of natural history|a science-fiction film about Mars|a neighbourhood bakery|a yoga class for beginners|
a used hatchback car|a smartphone with a large battery|a public library|a city bus service|a pizza delivery app|a
camping tent for two people|a cookbook of vegetarian recipes|a fitness tracker|an electric kettle|a children's theme
park|a coffee subscription|a history podcast|a jazz concert in a park|a mystery novel set in Venice|a budget airline
flight|a dentist's office|a pair of running shoes|a board game for families|a ramen shop|a coworking space|a laptop
for students|a hiking trail in the mountains|a sushi restaurant|a language-learning app|a streaming service|a ferry
crossing|a car rental company|a hair salon|a video game about farming|a tea house|a hardware store|a weekend cooking
course|a robot vacuum cleaner|a beach resort|a photography exhibition|a bicycle repair shop|a food truck selling
tacos|a ski lodge|a second-hand bookshop|a smart watch|an online course on statistics|a vegan burger"""

CUSTOMER = """My order arrived two weeks late|The blender I bought stopped working after a month|I was charged twice for
the same subscription|The hotel room was not cleaned during my stay|Your app keeps logging me out|The shoes I ordered
are the wrong size|My internet connection drops every evening|The waiter was rude to my family|I cannot find the
tracking number for my parcel|The replacement part you sent does not fit|I would like to cancel my gym membership|The
train I booked was cancelled without notice|My package was left in the rain|The discount code on your website does
not work|I received someone else's order|The sofa was delivered with a torn cushion|Your customer line kept me on
hold for an hour|The course I paid for has broken video links|My refund has not arrived after thirty days|The rental
car had a flat tyre|The printer ink runs out far too fast|I love the new menu and wanted to say thank you|The
instructions for the bookshelf are missing a page|My flight was overbooked and I lost my seat|The headphones crackle
in the left ear|I was promised a call back that never came|The jacket faded after one wash|The pharmacy gave me the
wrong dosage label|Your website will not accept my card|The concert was moved to another date|The paint colour
looks different from the photo|My coffee machine leaks water|The tour guide never showed up|The software update
deleted my settings|The mattress smells of chemicals|The plumber you sent did not finish the job|My loyalty points
disappeared|The cake for my daughter's birthday was the wrong flavour|Delivery staff damaged my front gate|The
online form rejects my postcode"""

PRODUCTS = """a stainless steel water bottle|a bamboo cutting board|a wool winter hat|a solar garden lamp|a cast iron
frying pan|a folding bicycle|a leather notebook|a ceramic teapot|a portable phone charger|a standing desk|a linen
shirt|an indoor herb garden kit|a kids' raincoat|a desk lamp with adjustable brightness|a reusable shopping bag|a
travel pillow|a set of kitchen knives|a waterproof hiking boot|a mechanical pencil|a scented candle|a dog lead|a
coffee grinder|a yoga mat|a bird feeder|a rice cooker|a set of watercolour paints|a bedside alarm clock|a hammock|a
pair of sunglasses|an electric toothbrush|a picnic basket|a cotton bath towel|a wall calendar|a chess set|a USB
microphone|a backpack for laptops|a cordless drill|a weighted blanket|a glass storage jar|a pair of wool socks|a
umbrella that fits in a bag|a baby monitor|a spice rack|a keyboard cover|a tennis racket|a plant pot with a saucer|a
thermos flask|a puzzle of a thousand pieces|a car phone holder|a sewing kit"""

ADVICE = """How can I sleep better?|How do I start saving money on a small salary?|What should I pack for a weekend
trip?|How can I make my houseplants live longer?|How do I prepare for a job interview?|How can I learn to cook
simple meals?|What is a good way to start running?|How do I keep my phone battery healthy?|How should I talk to a
neighbour about noise?|How can I focus better when working from home?|What should I know before adopting a cat?|How
can I reduce food waste at home?|How do I choose a good second-hand bicycle?|How can I make new friends in a new
city?|How do I write a polite email asking for a deadline extension?|What should I do if my car will not start?|How
can I drink more water during the day?|How do I keep a small apartment tidy?|How should I plan a child's birthday
party?|How can I get better at public speaking?|How do I look after a cast iron pan?|What is a sensible way to
learn a new language?|How can I spend less time on my phone?|How do I prepare for a long flight?|How do I pick a
good watermelon?|How can I stay warm without raising the heating bill?|How do I ask my manager for feedback?|What
should I check before signing a rental lease?|How can I help a friend who is stressed?|How do I start a vegetable
garden on a balcony?|How should I store fresh herbs?|How can I make a small budget for groceries?|How do I clean a
laptop keyboard safely?|How do I get back into reading books?|How can I keep my dog calm during fireworks?|What is a
good routine for the morning?|How do I choose running shoes?|How can I learn to swim as an adult?|How should I
prepare for a first camping trip?|How do I remove a coffee stain from a shirt?"""

PLACES = """a rainy morning in a big city|a village market on a Saturday|a lighthouse on a rocky coast|an old train
station|a quiet library in winter|a desert at sunset|a busy airport terminal|a forest after a storm|a harbour full of
fishing boats|a school playground at noon|a mountain lake in autumn|a night market in summer|a farm in early
spring|a museum hall full of statues|a small island with one road|a bridge over a wide river|a snowy street at
night|a crowded football stadium|an empty beach in winter|a garden full of roses"""

TEMPLATES = {
    "review": ["Write a short review of {}.", "Give your honest opinion of {} in a few sentences."],
    "customer": [
        'A customer writes: "{}." Write a short reply on behalf of the company.',
        'You work in customer support. A message says: "{}." How do you answer?',
    ],
    "product": ["Write a product description for {}.", "Describe {} for an online shop listing."],
    "advice": ["{}", "A friend asks you: {} What do you tell them?"],
    "place": ["Describe {}.", "Write a few sentences about {}."],
}


def subjects(block: str) -> list[str]:
    return [item.strip().replace("\n", " ") for item in block.replace("\n", " ").split("|") if item.strip()]


def main(output_dir: str = os.path.join(os.path.dirname(__file__), "tone_prompts"), seed: int = 0) -> None:
    rng = random.Random(seed)
    splits = {"train": [], "test": []}
    for kind, block in [("review", REVIEWS), ("customer", CUSTOMER), ("product", PRODUCTS), ("advice", ADVICE),
                        ("place", PLACES)]:  # fmt: skip
        items = subjects(block)
        rng.shuffle(items)
        num_test = round(len(items) * 0.18)  # unseen subjects for the held-out split
        for split, chosen in (("test", items[:num_test]), ("train", items[num_test:])):
            for item in chosen:
                for template in TEMPLATES[kind]:
                    content = template.format(item.rstrip("?") + "?" if kind == "advice" else item)
                    splits[split].append({"prompt": [{"role": "user", "content": content}], "kind": kind})
    os.makedirs(output_dir, exist_ok=True)
    for split, rows in splits.items():
        rng.shuffle(rows)
        with open(os.path.join(output_dir, f"{split}.jsonl"), "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        print(f"{split}: {len(rows)} prompts")


if __name__ == "__main__":
    main()
